"""Requests that get no run, through the real AMQP path and pycti's helper: each work ends with
a clear message and nothing reaches the ledger. A TLP:RED request is accepted with a note, and
kept while Dagster is unreachable."""

from __future__ import annotations

import json

import pytest

from tests.connector.conftest import wait_until
from tests.ui.test_webserver import free_port

pytestmark = pytest.mark.timeout(120)


def errors_of(work: dict) -> str:
    return " | ".join(str(e.get("message") or e.get("error")) for e in work["errors"])


def test_malformed_out_of_scope_deleted_and_playbook_get_a_message_and_no_run(
        double, connector_factory):
    dead_dagster = f"http://127.0.0.1:{free_port()}"
    connector = connector_factory(dead_dagster, CONNECTOR_SCOPE="IPv4-Addr,StixFile",
                                  CONNECTOR_COALESCE_WINDOW_S="0").start()
    ip = double.add_observable("IPv4-Addr", "45.83.12.40", "2026-11-24T08:00:00Z",
                               markings=("TLP:GREEN",))
    domain = double.add_observable("Domain-Name", "bad.example", "2026-11-24T08:00:00Z")

    malformed = double.create_work(connector.id)
    message = double.enrichment_message(malformed, ip)
    del message["event"]["entity_id"]
    double.publish(connector.id, message)

    out_of_scope = double.create_work(connector.id)
    double.publish(connector.id, double.enrichment_message(out_of_scope, domain))

    deleted = double.create_work(connector.id)
    gone = dict(ip, standard_id="ipv4-addr--00000000-0000-5000-8000-000000000000")
    double.publish(connector.id, double.enrichment_message(deleted, gone))

    playbook = double.create_work(connector.id)
    message = double.enrichment_message(playbook, ip)
    message["internal"]["playbook"] = {
        "event_id": "1", "execution_id": "e1", "playbook_id": "p1", "data_instance_id": "d1",
        "step_id": "s2", "previous_step_id": "s1"}
    message["event"]["bundle"] = {"type": "bundle", "id": "bundle--1",
                                  "objects": [json.loads(message["event"]["stix_entity"])]}
    double.publish(connector.id, message)

    expected = {
        malformed: "must be based on a specific id",
        out_of_scope: "Domain-Name is outside this connector's scope: no run launched",
        deleted: "Unable to read/access the entity",
        playbook: "playbook enrichment refused",
    }
    for work_id, text in expected.items():
        work = double.wait_for_work(work_id, lambda w: w["status"] == "complete", 60)
        assert text in errors_of(work), work
        assert not any(m["message"].startswith("accepted") for m in work["messages"])
    assert connector.ledger_rows("SELECT * FROM requests") == []
    assert connector.ledger_rows("SELECT * FROM batches") == []
    assert double.token not in connector.log_path.read_text()  # never log the token


def test_above_max_tlp_is_accepted_with_a_note_and_kept_while_dagster_is_down(
        double, connector_factory):
    dead_dagster = f"http://127.0.0.1:{free_port()}"
    connector = connector_factory(dead_dagster, CONNECTOR_COALESCE_WINDOW_S="0").start()
    red = double.add_observable("IPv4-Addr", "45.83.12.41", "2026-11-25T08:00:00Z",
                                markings=("TLP:RED",))
    work_id = double.create_work(connector.id)
    double.publish(connector.id, double.enrichment_message(work_id, red))
    work = double.wait_for_work(work_id, lambda w: w["processed_time"], 60)
    accepted = [m["message"] for m in work["messages"] if m["message"].startswith("accepted")]
    assert accepted and "marked TLP:RED, above the max TLP of" in accepted[0]
    assert work["status"] == "progress" and work["expected"] == 1  # open until the run ends
    # Dagster unreachable: the batch is kept and its launch retried with backoff
    wait_until(lambda: connector.ledger_rows(
        "SELECT attempts FROM batches WHERE attempts >= 2"), 30, "two launch attempts",
        connector.alive)
    assert connector.ledger_rows("SELECT work_id FROM requests") == [(work_id,)]
    assert double.work(work_id)["status"] == "progress"
