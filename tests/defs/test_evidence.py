"""When providers fail: each lookup's error-rate check warns (never blocks), the run says how
many observables have no provider evidence, and a day on which every provider failed writes
nothing to the store (every row of the write-back table says `held_back`). The providers fail
through the sandbox's own faults, over real sockets."""

import dagster as dg
import pandas as pd
import pytest

from cti_assets.providers import base
from cti_assets.sandbox.faults import PROVIDERS as SANDBOX_PROVIDERS
from tests.defs.test_pipeline import DAY, pipeline, run  # noqa: F401 (fixture)

API_LOOKUPS = [f"{p}_lookups" for p in base.ALL_PROVIDERS if p != base.NETWORK_CONTEXT]


def fail_every_provider(sandbox, monkeypatch) -> None:
    for provider in SANDBOX_PROVIDERS:
        sandbox.inject(provider, "http_503", count=100_000)
        monkeypatch.setenv(f"{provider.upper()}_MAX_RETRIES", "0")


def checks_by_asset(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(c.asset_key.to_user_string(), c.check_name): c
            for c in result.get_asset_check_evaluations()}


def materialization(result, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey(asset))
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


def test_every_check_has_a_description():
    from cti_assets.definitions import defs

    specs = [spec for assets_def in defs.assets or [] if isinstance(assets_def,
             dg.AssetsDefinition) for spec in assets_def.check_specs]
    assert len(specs) >= 4 + len(API_LOOKUPS) + 1
    assert all(spec.description for spec in specs), [s.name for s in specs
                                                      if not s.description]


def test_lookup_error_rate_checks_are_warnings_and_not_blocking():
    from cti_assets.definitions import defs

    for name in API_LOOKUPS:
        (spec,) = defs.get_assets_def(name).check_specs
        assert spec.name == "error_rate" and not spec.blocking


def test_error_rate_threshold_is_configurable(monkeypatch):
    from cti_assets.defs.lookups import error_rate_check

    frame = pd.DataFrame({"status": ["ok", "error", "error", "skipped", "deferred"],
                          "reason": [None, "transient", "auth", "no_key", "budget"]})
    # 2 failed of 3 attempted: skipped and budget-deferred rows were never attempted
    result = error_rate_check("virustotal", frame, None)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["attempted"].value == 3
    assert error_rate_check("virustotal", frame, 0.7).passed
    monkeypatch.setenv("CTI_LOOKUP_ERROR_RATE_WARN", "0.9")
    assert error_rate_check("virustotal", frame, None).passed
    monkeypatch.setenv("CTI_LOOKUP_ERROR_RATE_WARN", "2")
    with pytest.raises(ValueError, match="CTI_LOOKUP_ERROR_RATE_WARN"):
        error_rate_check("virustotal", frame, None)


def test_healthy_day_passes_and_writes_every_scored_observable(pipeline):  # noqa: F811
    from cti_assets.storage.outputs import read_partition

    defs, _, instance = pipeline
    result = run(defs, instance)
    checks = checks_by_asset(result)
    for name in API_LOOKUPS:
        assert checks[(name, "error_rate")].passed, name
    assert checks[("opencti_writeback", "provider_evidence")].passed
    statuses = read_partition("opencti_writeback", DAY)
    scores = read_partition("observable_scores", DAY)
    assert sorted(statuses["stix_id"]) == sorted(scores["stix_id"])  # nothing lost
    assert set(statuses["writeback_status"]) == {"written", "not_written"}
    assert (statuses["writeback_status"] == "written").sum() > 20
    merged = materialization(result, "merged_enrichment")
    assert merged["observables_with_provider_evidence"] > 0
    assert merged["observables_failed_by_every_provider"] == 0


def test_every_provider_failing_holds_the_day_back(pipeline, monkeypatch):  # noqa: F811
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    fail_every_provider(sandbox, monkeypatch)
    before = LocalStixStore().counts_by_type()
    result = run(defs, instance)  # the run succeeds: warnings and a failed check say why
    checks = checks_by_asset(result)
    for name in API_LOOKUPS:
        check = checks[(name, "error_rate")]
        if check.metadata["attempted"].value:  # a provider triage gave nothing is not judged
            assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN, name
    assert sum(checks[(n, "error_rate")].metadata["attempted"].value for n in API_LOOKUPS) > 0

    observables = read_partition("observables", DAY)
    merged = materialization(result, "merged_enrichment")
    assert merged["observables_with_provider_evidence"] == 0
    assert merged["observables_without_provider_evidence"] == len(observables)
    assert merged["observables_failed_by_every_provider"] > 0

    evidence = checks[("opencti_writeback", "provider_evidence")]
    assert not evidence.passed and evidence.severity == dg.AssetCheckSeverity.ERROR
    writeback = materialization(result, "opencti_writeback")
    assert writeback["writeback"] == "held_back"
    assert writeback["observables_without_provider_evidence"] == len(observables)
    assert instance.get_run_by_id(result.run_id).tags["cti/writeback"] == "held_back"
    warning = [entry.user_message for entry in instance.all_logs(result.run_id)
               if "held back: no provider answered" in (entry.user_message or "")]
    assert len(warning) == 1 and f"any of its {len(observables)} observables (" in warning[0]

    # nothing written, and every observable's row says so
    assert LocalStixStore().counts_by_type() == before
    statuses = read_partition("opencti_writeback", DAY)
    assert sorted(statuses["stix_id"]) == sorted(observables["stix_id"])
    assert set(statuses["writeback_status"]) == {"held_back"}
    assert set(statuses["reason"]) == {"no_provider_evidence"}

    # once the providers answer again, the same day is written
    sandbox.reset()
    result = run(defs, instance)
    assert materialization(result, "opencti_writeback")["writeback"] == "written"
    assert LocalStixStore().counts_by_type().get("note", 0) > before.get("note", 0)


def test_observables_every_asked_provider_failed_on_are_held_back_alone(pipeline, monkeypatch):  # noqa: F811,E501
    """Every provider that looks up domains failing leaves the domains without evidence: those
    are held back, the IPs the IP-only providers answered are written."""
    from cti_assets.providers.base import NETWORK_CONTEXT
    from cti_assets.providers.fields import PROVIDER_SCOPE
    from cti_assets.scoring.evidence import FAILED, evidence_states
    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    domain_providers = [provider for provider, scope in PROVIDER_SCOPE.items()
                        if "Domain-Name" in scope and provider != NETWORK_CONTEXT]
    for provider in domain_providers:
        sandbox.inject(provider, "http_503", count=100_000)
        monkeypatch.setenv(f"{provider.upper()}_MAX_RETRIES", "0")
    result = run(defs, instance)
    statuses = read_partition("opencti_writeback", DAY).set_index("stix_id")
    merged = read_partition("merged_enrichment", DAY)
    failed = set(merged.loc[(evidence_states(merged) == FAILED).to_numpy(), "stix_id"])
    assert failed, "the sample has observables only the failing providers were asked about"
    held = set(statuses.index[statuses["writeback_status"] == "held_back"])
    assert held == failed
    assert (statuses["writeback_status"] == "written").sum() > 0
    evidence = checks_by_asset(result)[("opencti_writeback", "provider_evidence")]
    assert not evidence.passed and evidence.severity == dg.AssetCheckSeverity.WARN
    assert materialization(result, "opencti_writeback")["held_back"] == len(failed)
