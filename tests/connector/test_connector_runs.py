"""End to end: the platform's message on the real RabbitMQ -> pycti's helper -> our connector ->
a Dagster run launched through a real webserver -> the work reported with the score.
Also: ten requests in the window share one run; kill -9 and restart launch and finish a request
exactly once."""

from __future__ import annotations

import re
import time

import pytest
import requests
import yaml

from tests.connector.conftest import wait_until
from tests.connector_double import APPLICANT_ID

# a run launches a process per step: minutes on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUNS = """
query { runsOrError(filter: {tags: [{key: "cti/trigger", value: "opencti-connector"}]}) {
  ... on Runs { results { runId status runConfigYaml tags { key value } } } } }
"""
RUN_TIMEOUT_S = 600


def connector_runs(url: str) -> list[dict]:
    response = requests.post(f"{url}/graphql", json={"query": RUNS}, timeout=30)
    response.raise_for_status()
    runs = response.json()["data"]["runsOrError"]["results"]
    for run in runs:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return runs


def finals(work: dict) -> list[str]:
    """The end-of-run lines the connector wrote on the work."""
    return [m["message"] for m in work["messages"] + work["errors"]
            if m.get("message", "").startswith("cti-assets")]


def test_one_request_one_run_and_the_work_reports_the_score(double, webserver,
                                                            connector_factory):
    url, env = webserver
    observable = double.add_observable("IPv4-Addr", "45.83.12.7", "2026-11-20T10:00:00Z",
                                       markings=("TLP:GREEN",))
    connector = connector_factory(url, data_dir=env["CTI_DATA_DIR"],
                                  CONNECTOR_COALESCE_WINDOW_S="0.5").start()
    work_id = double.create_work(connector.id)
    started = time.monotonic()
    double.publish(connector.id, double.enrichment_message(work_id, observable))
    work = double.wait_for_work(work_id, lambda w: w["status"] == "complete", RUN_TIMEOUT_S)
    print(f"\none request: message -> work complete in {time.monotonic() - started:.1f}s")

    runs = [r for r in connector_runs(url) if work_id in r["tags"]["cti/opencti_works"]]
    assert len(runs) == 1
    run = runs[0]
    assert run["status"] == "SUCCESS"
    assert run["tags"]["dagster/partition"] == "2026-11-20"
    assert run["tags"]["cti/opencti_works"] == work_id
    assert run["tags"]["cti/requested_by"] == APPLICANT_ID
    config = yaml.safe_load(run["runConfigYaml"])
    refresh = {op["config"]["refresh_values"][0] for op in config["ops"].values()}
    assert refresh == {observable["standard_id"]}

    assert work["errors"] == []
    [line] = finals(work)
    assert re.search(r"45\.83\.12\.7 score \d+(\.\d+)?, verdict \w+; run "
                     + re.escape(f"{url}/runs/{run['runId']}"), line), line
    received = [m["message"] for m in work["messages"] if "launched" in m["message"]]
    assert received and f"{url}/runs/{run['runId']}" in received[0]
    # the write-back is the pipeline's: the score is on the observable in OpenCTI
    assert double.get(observable["id"])["x_opencti_score"] is not None
    # the work is reported first and the request forgotten after (at least once, never lost):
    # the ledger empties just after the work completes
    wait_until(lambda: connector.ledger_rows("SELECT * FROM requests") == [], 30,
               "the ledger to forget the reported request", connector.alive)


def test_ten_requests_in_the_window_make_one_run(double, webserver, connector_factory):
    url, env = webserver
    observables = [double.add_observable("IPv4-Addr", f"45.83.12.{n}", "2026-11-21T08:00:00Z",
                                         markings=("TLP:GREEN",)) for n in range(10, 20)]
    connector = connector_factory(url, data_dir=env["CTI_DATA_DIR"],
                                  CONNECTOR_COALESCE_WINDOW_S="5").start()
    works = [double.create_work(connector.id) for _ in observables]
    started = time.monotonic()
    for work_id, observable in zip(works, observables, strict=True):
        double.publish(connector.id, double.enrichment_message(work_id, observable))
    for work_id in works:
        double.wait_for_work(work_id, lambda w: w["status"] == "complete", RUN_TIMEOUT_S)
    print(f"\nten requests: first message -> all works complete in "
          f"{time.monotonic() - started:.1f}s")

    # the module's webserver also holds the other tests' runs: these are the ten's
    runs = [r for r in connector_runs(url)
            if set(r["tags"]["cti/opencti_works"].split(",")) & set(works)]
    [run] = runs
    assert run["status"] == "SUCCESS"
    assert set(run["tags"]["cti/opencti_works"].split(",")) == set(works)
    config = yaml.safe_load(run["runConfigYaml"])
    refreshed = set(config["ops"]["virustotal_lookups"]["config"]["refresh_values"])
    assert refreshed == {o["standard_id"] for o in observables}
    for work_id, observable in zip(works, observables, strict=True):
        work = double.work(work_id)
        assert work["errors"] == []
        [line] = finals(work)
        assert f"{observable['value']} score " in line and run["runId"] in line


def test_kill_9_then_restart_launches_and_finishes_exactly_once(double, webserver,
                                                               connector_factory):
    """Killed after accepting (before the launch), restarted; killed again after the launch
    (before the run ended), restarted: one run, one final line on the work."""
    url, env = webserver
    observable = double.add_observable("IPv4-Addr", "45.83.12.30", "2026-11-22T08:00:00Z",
                                       markings=("TLP:GREEN",))
    connector = connector_factory(url, data_dir=env["CTI_DATA_DIR"],
                                  CONNECTOR_COALESCE_WINDOW_S="2").start()
    work_id = double.create_work(connector.id)

    def mine() -> list[dict]:
        return [r for r in connector_runs(url) if r["tags"]["cti/opencti_works"] == work_id]

    double.publish(connector.id, double.enrichment_message(work_id, observable))
    wait_until(lambda: connector.ledger_rows(
        f"SELECT 1 FROM requests WHERE work_id = '{work_id}' AND batch_id IS NULL"), 30,
        "acceptance", connector.alive)
    connector.kill9()
    assert mine() == []  # killed before the launch

    connector.start()
    wait_until(lambda: connector.ledger_rows(
        "SELECT run_id FROM batches WHERE run_id IS NOT NULL"), 120, "the launch",
        connector.alive)
    connector.kill9()
    [launched] = mine()
    assert launched["status"] not in ("SUCCESS", "FAILURE", "CANCELED")  # killed mid-run

    connector.start()
    work = double.wait_for_work(work_id, lambda w: w["status"] == "complete", RUN_TIMEOUT_S)
    [run] = mine()
    assert run["runId"] == launched["runId"] and run["status"] == "SUCCESS"
    assert len(finals(work)) == 1, work
    assert work["reported"] == 1 and work["errors"] == []
    # the work is reported first and the request forgotten after (at least once, never lost):
    # the ledger empties just after the work completes
    wait_until(lambda: connector.ledger_rows("SELECT * FROM requests") == [], 30,
               "the ledger to forget the reported request", connector.alive)
