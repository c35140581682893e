"""The real UI backend: dagster-webserver on 127.0.0.1 serves the asset graph and launches a
partitioned run of the code location that succeeds (against the provider sandbox)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.defs.test_definitions import EXPECTED_PARENTS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

ASSET_GRAPH = """
query {
  assetNodes { assetKey { path } dependencyKeys { path } }
}
"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
ENTRIES = """
  label
  __typename
  ... on IntMetadataEntry { intValue }
  ... on TableSchemaMetadataEntry { schema { columns { name type } } }
  ... on TableColumnLineageMetadataEntry {
    lineage { columnName columnDeps { assetKey { path } columnName } }
  }
"""
ASSET_METADATA = (
    "query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { "
    "metadataEntries { " + ENTRIES + " } "
    "assetMaterializations(limit: 1) { partition metadataEntries { " + ENTRIES + " } } } } }"
)


def asset_metadata(url: str, asset: str) -> tuple[dict, dict]:
    """(definition metadata, latest materialization metadata) of an asset, by label."""
    node = graphql(url, ASSET_METADATA, {"key": {"path": [asset]}})["assetNodeOrError"]
    (materialization,) = node["assetMaterializations"]
    return ({e["label"]: e for e in node["metadataEntries"]},
            {e["label"]: e for e in materialization["metadataEntries"]})


def lineage_of(entry: dict) -> dict[str, set[tuple[str, str]]]:
    return {item["columnName"]: {("/".join(d["assetKey"]["path"]), d["columnName"])
                                 for d in item["columnDeps"]} for item in entry["lineage"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    payload = response.json()
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture
def webserver(tmp_path):
    from cti_assets.sandbox import ProviderSandbox

    home = tmp_path / "dagster_home"
    home.mkdir()
    # launch runs at once: the queued coordinator would need a daemon
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    port = free_port()
    log_path = tmp_path / "webserver.log"  # a file, not a pipe: an unread pipe blocks the run
    with ProviderSandbox(port=0) as sandbox, log_path.open("w") as log:
        env = {
            **os.environ,
            **sandbox.base_urls,
            "DAGSTER_HOME": str(home),
            "CTI_DATA_DIR": str(tmp_path / "data"),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster_webserver",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(ROOT / "workspace.yaml"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"{url}/server_info", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert process.poll() is None, log_path.read_text()[-2000:]
                time.sleep(0.5)  # waiting for a child process to listen, not for timing
            yield url, env, log_path
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_asset_graph_and_a_partitioned_run(webserver):
    url, env, log_path = webserver
    nodes = graphql(url, ASSET_GRAPH)["assetNodes"]
    graph = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in nodes
    }
    assert graph == EXPECTED_PARENTS

    # import one observable into the store the webserver's runs read
    from cti_assets.sources.local import LocalStixStore

    Path(env["CTI_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    store = LocalStixStore(Path(env["CTI_DATA_DIR"]) / "store.sqlite")
    from datetime import UTC, datetime

    from cti_assets.sources.bundle_files import import_bundles

    bundle = Path(env["CTI_DATA_DIR"]) / "one.json"
    bundle.write_text(
        json.dumps(
            {
                "type": "bundle",
                "id": "bundle--5a0c1b2e-0000-4000-8000-000000000001",
                "objects": [
                    {
                        "type": "ipv4-addr",
                        "spec_version": "2.1",
                        "id": "ipv4-addr--5a0c1b2e-0000-4000-8000-000000000002",
                        "value": "45.83.12.7",
                    }
                ],
            }
        )
    )
    import_bundles(store, [bundle], datetime(2026, 11, 20, 10, tzinfo=UTC))

    params = {
        "selector": {
            "repositoryLocationName": "cti_assets",
            "repositoryName": "__repository__",
            "jobName": "enrichment",
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2026-11-20"}]},
        "runConfigData": {},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)  # polling a run launched in another process
    assert status == "SUCCESS"
    scores = Path(env["CTI_DATA_DIR"]) / "outputs" / "observable_scores" / "2026-11-20.parquet"
    assert scores.exists()

    # what the UI shows of the scores: row count, column schema, column lineage down to a
    # typed lookup column, and verdict counts as numbers (plotted across partitions)
    definition, materialized = asset_metadata(url, "observable_scores")
    schema = definition["dagster/column_schema"]["schema"]["columns"]
    assert {"score", "confidence", "verdict", "final_score"} <= {c["name"] for c in schema}
    assert materialized["dagster/row_count"] == {
        "label": "dagster/row_count", "__typename": "IntMetadataEntry", "intValue": 1}
    verdicts = {k: e for k, e in materialized.items() if k.startswith("verdict_")}
    assert {e["__typename"] for e in verdicts.values()} == {"IntMetadataEntry"}
    assert sum(e["intValue"] for e in verdicts.values()) == 1
    score_lineage = lineage_of(materialized["dagster/column_lineage"])
    assert ("merged_enrichment", "virustotal__malicious") in score_lineage["score"]
    _, merged = asset_metadata(url, "merged_enrichment")
    assert lineage_of(merged["dagster/column_lineage"])["virustotal__malicious"] == {
        ("virustotal_lookups", "virustotal__malicious")}
    # the code server, the run and its steps logged no Dagster lifecycle warning
    log = log_path.read_text()
    for warning in ("BetaWarning", "PreviewWarning", "SupersessionWarning",
                    "is deprecated and will be removed in"):
        assert warning not in log, warning
    lookups_definition, _ = asset_metadata(url, "virustotal_lookups")
    assert "virustotal__malicious" in {
        c["name"] for c in lookups_definition["dagster/column_schema"]["schema"]["columns"]}

    # a real asset backfill through launchPartitionBackfill, at a lower priority than sensor runs
    from cti_assets.cli.backfill import launch_backfill

    backfill_id = launch_backfill("2026-11-19", "2026-11-20", url=url, job="rescore")
    backfill = graphql(
        url,
        "query($id: String!) { partitionBackfillOrError(backfillId: $id) { "
        "... on PartitionBackfill { id partitionNames tags { key value } } } }",
        {"id": backfill_id},
    )["partitionBackfillOrError"]
    assert backfill["id"] == backfill_id
    assert backfill["partitionNames"] == ["2026-11-19", "2026-11-20"]
    assert {"key": "dagster/priority", "value": "-10"} in backfill["tags"]
