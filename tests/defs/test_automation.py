"""Automation: a rescore writes its new scores back in the same run, the scores carry the
scoring model's version as code_version and a freshness policy, and the executor is the one
the deployment's environment names."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from tests.defs.test_pipeline import DAY, pipeline, run  # noqa: F401 (fixture)


def test_scores_carry_the_model_version_and_a_freshness_policy():
    from cti_assets.definitions import defs
    from cti_assets.scoring.model import MODEL_VERSION

    node = defs.resolve_asset_graph().get(dg.AssetKey("observable_scores"))
    assert node.code_version == f"model-{MODEL_VERSION}"
    policy = node.freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta() == timedelta(hours=26)


def test_rescore_job_ends_with_the_write_back():
    from cti_assets.cli.backfill import job_assets
    from cti_assets.definitions import defs

    job = defs.resolve_job_def("rescore")
    keys = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert keys == {"merged_enrichment", "observable_scores", "opencti_writeback"}
    assert set(job_assets()["rescore"]) == keys  # a rescore backfill writes back too


@pytest.mark.parametrize(("value", "executor"), [
    (None, "multiprocess"), ("in_process", "in_process"), ("multiprocess", "multiprocess")])
def test_executor_follows_the_environment(monkeypatch, value, executor):
    from cti_assets.definitions import build_defs

    if value is None:
        monkeypatch.delenv("CTI_EXECUTOR", raising=False)
    else:
        monkeypatch.setenv("CTI_EXECUTOR", value)
    monkeypatch.setenv("CTI_MAX_CONCURRENT_STEPS", "3")
    schema = build_defs().resolve_job_def("enrichment").executor_def.config_schema
    resolved = schema.resolve_config({"config": {}})
    assert resolved.success and list(resolved.value["config"]) == [executor]
    if executor == "multiprocess":
        assert resolved.value["config"]["multiprocess"]["max_concurrent"] == 3
    # a run can still ask for one process (what the sensor does for a small day)
    asked = schema.resolve_config({"config": {"in_process": True}})
    assert list(asked.value["config"]) == ["in_process"]


@pytest.mark.parametrize(("value", "start"), [
    (None, "forkserver"), ("spawn", "spawn"), ("forkserver", "forkserver")])
def test_steps_start_as_the_environment_says(monkeypatch, value, start):
    from cti_assets.definitions import PRELOADED, build_defs

    monkeypatch.delenv("CTI_EXECUTOR", raising=False)
    if value is None:
        monkeypatch.delenv("CTI_STEP_START", raising=False)
    else:
        monkeypatch.setenv("CTI_STEP_START", value)
    schema = build_defs().resolve_job_def("enrichment").executor_def.config_schema
    resolved = schema.resolve_config({"config": {}})
    start_method = resolved.value["config"]["multiprocess"]["start_method"]
    assert list(start_method) == [start]
    if start == "forkserver":
        assert start_method["forkserver"]["preload_modules"] == [PRELOADED]
        assert PRELOADED == "cti_assets.definitions"


def test_an_unknown_step_start_is_refused(monkeypatch):
    from cti_assets.definitions import build_defs

    monkeypatch.setenv("CTI_STEP_START", "fork")
    with pytest.raises(ValueError, match="CTI_STEP_START"):
        build_defs()


def test_an_unknown_executor_is_refused(monkeypatch):
    from cti_assets.definitions import build_defs

    monkeypatch.setenv("CTI_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="CTI_EXECUTOR"):
        build_defs()


def test_a_rescore_reaches_the_store(pipeline):  # noqa: F811
    """New weights through the rescore job: the store holds the new final scores, with zero
    provider calls."""
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    defs, sandbox, instance = pipeline
    run(defs, instance)
    before = read_partition("observable_scores", DAY).set_index("stix_id")
    sandbox.reset_log()
    config = {"ops": {"observable_scores": {"config": {
        "weights": {"vt_malicious_weight": 0.2}, "score_policy": "replace"}}}}
    result = run(defs, instance, job="rescore", run_config=config)
    assert sandbox.request_count() == 0
    assert dg.AssetKey("opencti_writeback") in {
        e.asset_key for e in result.get_asset_materialization_events()}
    after = read_partition("observable_scores", DAY).set_index("stix_id")
    changed = after[after["final_score"].ne(before["final_score"]).fillna(False)
                    & after["final_score"].notna()]
    assert len(changed) >= 1  # the new weights mattered
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    stored = {r.stix_id: r.score for r in
              LocalStixStore().observables_created_between(start, start + timedelta(days=1))}
    for stix_id, row in changed.iterrows():
        assert stored[stix_id] == int(row["final_score"])


def test_default_executor_runs_every_cheap_lookup_at_once(monkeypatch):
    """The cheap lookups wait on providers' quotas side by side; fewer slots than cheap lookup
    steps runs them in rounds, each as long as a provider's quota (bench/results.md)."""
    from cti_assets.definitions import build_defs

    monkeypatch.delenv("CTI_EXECUTOR", raising=False)
    monkeypatch.delenv("CTI_MAX_CONCURRENT_STEPS", raising=False)
    defs = build_defs()
    cheap = defs.resolve_asset_graph().asset_keys_for_group("cheap_lookups")
    schema = defs.resolve_job_def("enrichment").executor_def.config_schema
    resolved = schema.resolve_config({"config": {}})
    assert len(cheap) >= 8
    assert resolved.value["config"]["multiprocess"]["max_concurrent"] >= len(cheap)
