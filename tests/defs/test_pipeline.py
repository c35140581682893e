"""The whole graph on the embedded default against the provider sandbox: every observable has
a row everywhere, a rerun spends no provider call and creates nothing new in the store, and a
rescore of stored lookups makes no request at all."""

from datetime import UTC

import dagster as dg
import pandas as pd
import pytest

from cti_assets.providers.base import ALL_PROVIDERS

DAY = "2026-11-20"
pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    from cti_assets.cli import demo, runs
    from cti_assets.sandbox import ProviderSandbox

    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name in ("OPENCTI_URL", "CTI_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    with ProviderSandbox(port=0) as sandbox:
        for name, value in sandbox.base_urls.items():
            monkeypatch.setenv(name, value)
        for provider in demo.KEYED_PROVIDERS:
            monkeypatch.setenv(f"{provider}_API_KEY", "test-key")
        for name, value in ({
            "VIRUSTOTAL_PER_MINUTE": "6000",
            "VIRUSTOTAL_PER_DAY": "100000",
            "SECURITYTRAILS_PER_MONTH": "100000",
            "SHODAN_PER_SECOND": "100",
            "GREYNOISE_PER_SECOND": "100",
            "ABUSEIPDB_PER_SECOND": "100",
            "SHODAN_INTERNETDB_PER_SECOND": "100",
            "SECURITYTRAILS_PER_SECOND": "100",
            "CROWDSEC_PER_DAY": "100000",
        } | {f"{provider.upper()}_PER_SECOND": "100" for provider in ALL_PROVIDERS}).items():
            monkeypatch.setenv(name, value)
        demo.import_sample((DAY,))
        defs = runs.load_defs()
        yield defs, sandbox, dg.DagsterInstance.ephemeral()


def run(defs, instance, job="enrichment", run_config=None):
    result = defs.resolve_job_def(job).execute_in_process(
        partition_key=DAY, instance=instance, raise_on_error=False, run_config=run_config
    )
    failures = [
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    assert result.success, failures
    return result


def test_whole_graph_then_rerun_then_rescore(pipeline):
    from cti_assets.providers.typed_fields import typed_field_columns
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    run(defs, instance)
    first_calls = sandbox.request_count()
    assert first_calls > 0

    observables = read_partition("observables", DAY)
    scores = read_partition("observable_scores", DAY)
    assert len(observables) > 20
    assert sorted(scores["stix_id"]) == sorted(observables["stix_id"])
    merged = read_partition("merged_enrichment", DAY).set_index("stix_id")
    for provider in ("virustotal", "abuseipdb", "greynoise", "shodan_internetdb",
                     "network_context"):
        lookups = read_partition(f"{provider}_lookups", DAY)
        assert sorted(lookups["stix_id"]) == sorted(observables["stix_id"])
        assert lookups["status"].notna().all()
        # fields stored parsed beside their JSON, and merged from there
        typed = lookups.set_index("stix_id")[typed_field_columns(provider)]
        assert typed.notna().any().any()
        pd.testing.assert_frame_equal(merged.loc[typed.index, typed.columns], typed,
                                      check_index_type=False)
    rejected = observables[observables["status"] == "rejected"]
    assert len(rejected) >= 1 and rejected["reason"].notna().all()

    # nothing above the provider's max TLP (AMBER) ever reached the sandbox
    above = set(
        observables[observables["tlp"].isin(["TLP:RED", "TLP:AMBER+STRICT"])][
            "normalized_value"
        ].dropna()
    )
    sent = {r.observable for r in sandbox.requests}
    assert not (above & sent)

    store = LocalStixStore()
    counts_after_first = store.counts_by_type()
    assert counts_after_first.get("note", 0) >= 1

    sandbox.reset_log()
    run(defs, instance)
    assert sandbox.request_count() == 0
    assert store.counts_by_type() == counts_after_first
    assert read_partition("observable_scores", DAY)["score"].equals(scores["score"])

    run(defs, instance, job="rescore")
    assert sandbox.request_count() == 0


def test_rescore_in_small_slices_writes_the_same_tables(pipeline, monkeypatch):
    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    run(defs, instance)
    whole = {name: read_partition(name, DAY) for name in ("merged_enrichment", "observable_scores")}
    assert len(whole["observable_scores"]) > 7
    monkeypatch.setenv("CTI_BATCH_ROWS", "7")
    sandbox.reset_log()
    result = run(defs, instance, job="rescore")
    assert sandbox.request_count() == 0
    assert all(c.passed for c in result.get_asset_check_evaluations())
    for name, frame in whole.items():
        pd.testing.assert_frame_equal(read_partition(name, DAY), frame)


def test_blocking_checks_pass_and_lineage_is_published(pipeline):
    defs, _, instance = pipeline
    result = run(defs, instance)
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks
            if c.asset_key == dg.AssetKey("observable_scores")} == {
        "score_in_range",
        "one_row_per_observable",
        "no_duplicate_ids",
        "every_score_explained",
    }
    assert all(c.passed for c in checks)
    scores_event = next(
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("observable_scores")
    )
    metadata = scores_event.event_specific_data.materialization.metadata
    lineage = metadata["dagster/column_lineage"].value
    assert "score" in lineage.deps_by_column
    assert isinstance(metadata["verdict_unknown"], dg.IntMetadataValue)


def test_a_non_default_score_policy_reaches_the_store_unchanged_from_scoring(pipeline):
    """Scoring alone applies the policy; the store holds exactly its final_score."""
    from datetime import datetime, timedelta

    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    defs, _, instance = pipeline
    run(defs, instance, run_config={
        "ops": {"observable_scores": {"config": {"score_policy": "replace"}}}})
    scores = read_partition("observable_scores", DAY)
    written = scores[scores["final_score"].notna()]
    lowered = written[written["final_score"] < written["existing_score"]]
    assert len(lowered) >= 1  # the policy mattered for at least one observable
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    stored = {r.stix_id: r.score for r in
              LocalStixStore().observables_created_between(start, start + timedelta(days=1))}
    for row in written.itertuples():
        assert stored[row.stix_id] == int(row.final_score), row.normalized_value


def test_a_rescore_never_lowers_a_score_the_store_holds_now_under_keep_higher(pipeline):
    """A re-score reads no observables, so its scores carry the existing scores of the first
    read; the write-back decides again against the store's score of the moment: an analyst's
    95 stays, and a score the new weights lower stays where the first write-back put it."""
    import json
    import sqlite3

    from cti_assets import settings
    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    run(defs, instance)
    first = read_partition("observable_scores", DAY).set_index("stix_id")
    scored = first[first["final_score"].notna() & first["existing_score"].isna()]
    raised = scored.index[0]  # an analyst raises it by hand after the first write-back
    with sqlite3.connect(settings.store_path()) as store:
        obj = json.loads(store.execute("SELECT json FROM objects WHERE id = ?",
                                       (raised,)).fetchone()[0])
        obj["x_opencti_score"] = 99
        store.execute("UPDATE objects SET json = ? WHERE id = ?", (json.dumps(obj), raised))
    sandbox.reset_log()
    run(defs, instance, job="rescore", run_config={"ops": {"observable_scores": {"config": {
        "weights": {"abuse_confidence_weight": 0.05, "gn_suspicious_weight": 0.05,
                    "vt_malicious_weight": 0.05}}}}})
    assert sandbox.request_count() == 0
    rescored = read_partition("observable_scores", DAY).set_index("stix_id")
    lowered = [i for i in scored.index if rescored.loc[i, "score"] < first.loc[i, "score"]]
    assert lowered  # the weights did lower some scores
    with sqlite3.connect(settings.store_path()) as store:
        held = {i: json.loads(text).get("x_opencti_score") for i, text in store.execute(
            f"SELECT id, json FROM objects WHERE id IN ({', '.join('?' * len(scored))})",
            list(scored.index))}
    assert held[raised] == 99
    for stix_id in lowered:
        if stix_id != raised:
            assert held[stix_id] == int(first.loc[stix_id, "final_score"]), stix_id


def test_a_weights_file_reaches_a_rescore_that_has_no_run_config(pipeline, tmp_path,
                                                                 monkeypatch):
    """What a backfill of the rescore job runs with: CTI_SCORE_WEIGHTS, not the defaults."""
    import json

    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    run(defs, instance)
    before = read_partition("observable_scores", DAY).set_index("stix_id")["score"]
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"abuse_confidence_weight": 0.05,
                                   "gn_suspicious_weight": 0.05}))
    monkeypatch.setenv("CTI_SCORE_WEIGHTS", str(weights))
    sandbox.reset_log()
    run(defs, instance, job="rescore")
    after = read_partition("observable_scores", DAY).set_index("stix_id")["score"]
    assert sandbox.request_count() == 0
    assert (after.fillna(-1) != before.fillna(-1)).sum() >= 1
