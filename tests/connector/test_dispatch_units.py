"""The connector's decisions without the network: the request a message makes, the ledger's
coalescing and crash-safe launch, and the dispatcher's reporting, against a fake Dagster."""

from __future__ import annotations

import pytest

from cti_assets.connector.config import ConnectorConfigError, settings_from_env
from cti_assets.connector.dagster_api import DagsterUnavailableError, RunOutcome
from cti_assets.connector.dispatcher import Dispatcher, summary
from cti_assets.connector.ledger import Ledger
from cti_assets.connector.request import EnrichmentRequest, RequestRefusedError, parse_request
from cti_assets.sources.base import OBSERVABLE_TYPES


def entity(value: str = "45.83.12.7", tlp: str = "TLP:GREEN", created: str =
           "2026-11-20T23:59:59.900Z") -> dict:
    return {"standard_id": f"ipv4-addr--{value}", "entity_type": "IPv4-Addr",
            "observable_value": value, "created_at": created,
            "objectMarking": [{"definition_type": "TLP", "definition": tlp}]}


def request(work: str, value: str = "45.83.12.7", partition: str = "2026-11-20"
            ) -> EnrichmentRequest:
    return EnrichmentRequest(work, f"ipv4-addr--{value}", "IPv4-Addr", value, partition, "u1")


def test_settings_default_scope_auto_and_required():
    env = {"OPENCTI_URL": "http://o", "OPENCTI_TOKEN": "secret",
           "CONNECTOR_ID": "6f1c9d1e-3b1a-4c56-9a0e-2d7b8c1f4e55"}
    settings = settings_from_env(env)
    assert settings.scope == OBSERVABLE_TYPES and settings.auto is False
    assert "secret" not in repr(settings)
    assert settings.helper_config()["connector"]["type"] == "INTERNAL_ENRICHMENT"
    assert settings.in_scope("ipv4-addr") and not settings.in_scope("Email-Addr")
    with pytest.raises(ConnectorConfigError, match="CONNECTOR_ID"):
        settings_from_env({"OPENCTI_URL": "u", "OPENCTI_TOKEN": "t"})
    for not_v4 in ("not-a-uuid", "6f1c9d1e-3b1a-1c56-9a0e-2d7b8c1f4e55",  # a UUIDv1
                   "{6f1c9d1e-3b1a-4c56-9a0e-2d7b8c1f4e55}"):
        with pytest.raises(ConnectorConfigError, match="CONNECTOR_ID must be a UUIDv4"):
            settings_from_env({**env, "CONNECTOR_ID": not_v4})


def test_request_partition_is_the_utc_creation_day_and_tlp_is_noted():
    made = parse_request({"enrichment_entity": entity(created="2026-11-21T00:30:00+02:00")},
                         work_id="w", applicant_id="u", scope_ok=lambda t: True, playbook=False)
    assert made.partition == "2026-11-20" and made.entity_id == "ipv4-addr--45.83.12.7"
    assert made.notice == ""
    red = parse_request({"enrichment_entity": entity(tlp="TLP:RED")}, work_id="w",
                        applicant_id="u", scope_ok=lambda t: True, playbook=False)
    assert red.notice.startswith("marked TLP:RED, above the max TLP of ")
    assert "virustotal (max TLP:AMBER)" in red.notice


def test_the_tlp_noted_is_the_most_restrictive_and_names_only_providers_of_the_type():
    """As the pipeline decides it: RED then CLEAR is RED (the last marking is not the one), and
    only providers that look the type up are named."""
    both = dict(entity(), objectMarking=[
        {"id": "m1", "definition_type": "TLP", "definition": "TLP:RED"},
        {"id": "m2", "definition_type": "TLP", "definition": "TLP:CLEAR"}])
    made = parse_request({"enrichment_entity": both}, work_id="w", applicant_id="u",
                         scope_ok=lambda t: True, playbook=False)
    assert made.notice.startswith("marked TLP:RED, above the max TLP of ")
    domain = dict(entity(tlp="TLP:RED"), entity_type="Domain-Name",
                  standard_id="domain-name--x", observable_value="quillmere-ops.com")
    named = parse_request({"enrichment_entity": domain}, work_id="w", applicant_id="u",
                          scope_ok=lambda t: True, playbook=False).notice
    assert "virustotal (max TLP:AMBER)" in named and "securitytrails" in named
    for provider in ("greynoise", "shodan_internetdb", "crowdsec", "abuseipdb"):
        assert f"{provider} (" not in named
    unresolved = dict(entity(), objectMarking=[{"id": "marking-definition--nowhere"}])
    assert parse_request({"enrichment_entity": unresolved}, work_id="w", applicant_id="u",
                         scope_ok=lambda t: True, playbook=False).notice.startswith(
                             "marked TLP:RED")


def test_refusals_name_their_reason():
    kwargs = {"work_id": "w", "applicant_id": "u", "scope_ok": lambda t: t == "IPv4-Addr"}
    with pytest.raises(RequestRefusedError, match="playbook"):
        parse_request({"enrichment_entity": entity()}, playbook=True, **kwargs)
    with pytest.raises(RequestRefusedError, match="before the pipeline's first partition"):
        parse_request({"enrichment_entity": entity(created="2019-05-01T00:00:00Z")},
                      playbook=False, **kwargs)
    with pytest.raises(RequestRefusedError, match="Url is outside"):
        parse_request({"enrichment_entity": dict(entity(), entity_type="Url")}, playbook=False,
                      **kwargs)


def test_ledger_coalesces_per_partition_after_the_window(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    for n in range(10):
        assert ledger.accept(request(f"w{n}", f"1.1.1.{n}"), now=100.0 + n * 0.1)
    assert not ledger.accept(request("w0"), now=101.0)  # a redelivered work: recorded once
    ledger.accept(request("x", partition="2026-11-21"), now=101.5)
    assert ledger.form_due_batches(window_s=2.0, now=101.0) == []
    [batch] = ledger.form_due_batches(window_s=2.0, now=102.0)
    assert batch.partition == "2026-11-20"
    assert len(ledger.requests_of(batch.batch_id)) == 10
    # a reopened ledger (a restart) still has the batch and its requests
    again = Ledger(tmp_path / "l.sqlite")
    assert [b.batch_id for b in again.open_batches()] == [batch.batch_id]


class FakeDagster:
    def __init__(self) -> None:
        self.launched: list[tuple[str, list[str], dict]] = []
        self.existing: dict[str, str] = {}
        self.status = "STARTED"
        self.down = False

    def run_url(self, run_id: str) -> str:
        return f"http://d/runs/{run_id}"

    def find_run(self, batch_id: str) -> str | None:
        if self.down:
            raise DagsterUnavailableError("down")
        return self.existing.get(batch_id)

    def launch(self, partition, values, tags) -> str:
        self.launched.append((partition, values, tags))
        return f"run{len(self.launched)}"

    def outcome(self, run_id: str) -> RunOutcome:
        if self.status == "FAILURE":
            return RunOutcome("FAILURE", "ProviderAuthError", "virustotal_lookups")
        return RunOutcome(self.status)


class FakeWorks:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def to_received(self, work_id, message):
        self.events.append(("received", work_id, message))

    def to_processed(self, work_id, message, in_error=False):
        self.events.append(("processed", work_id, message, in_error))

    def report_expectation(self, work_id, error):
        self.events.append(("expectation", work_id, error))


def test_backoff_while_dagster_is_down_then_one_launch_and_one_report(tmp_path):
    ledger, dagster, works = Ledger(tmp_path / "l.sqlite"), FakeDagster(), FakeWorks()
    dispatcher = Dispatcher(ledger, dagster, works, window_s=1.0,
                            score_of=lambda p, e: {"score": 81.0, "verdict": "malicious"})
    ledger.accept(request("w1"), now=0.0)
    dagster.down = True
    dispatcher.tick(now=2.0)
    dispatcher.tick(now=2.5)  # before the backoff delay: no attempt
    [batch] = ledger.open_batches()
    assert batch.attempts == 1 and batch.next_attempt_at == 3.0
    dagster.down = False
    dispatcher.tick(now=3.0)
    dispatcher.tick(now=3.5)
    assert len(dagster.launched) == 1
    assert dagster.launched[0][:2] == ("2026-11-20", ["ipv4-addr--45.83.12.7"])
    dagster.status = "SUCCESS"
    dispatcher.tick(now=4.0)
    dispatcher.tick(now=5.0)
    processed = [e for e in works.events if e[0] == "processed"]
    assert processed == [("processed", "w1", "cti-assets: 45.83.12.7 score 81, verdict "
                          "malicious; run http://d/runs/run1", False)]
    assert ("expectation", "w1", None) in works.events
    assert ledger.pending_count() == 0


def test_a_restart_adopts_the_run_already_launched_for_its_batch(tmp_path):
    ledger, dagster, works = Ledger(tmp_path / "l.sqlite"), FakeDagster(), FakeWorks()
    ledger.accept(request("w1"), now=0.0)
    [batch] = ledger.form_due_batches(window_s=0.0, now=1.0)
    dagster.existing[batch.batch_id] = "earlier-run"  # launched, then the process died
    Dispatcher(ledger, dagster, works, window_s=0.0).tick(now=2.0)
    assert dagster.launched == []
    assert ledger.open_batches()[0].run_id == "earlier-run"


def test_a_failed_run_reports_its_error_class_in_error():
    line, in_error = summary(request("w"), RunOutcome("FAILURE", "ProviderAuthError",
                                                      "virustotal_lookups"), "http://d/r", None)
    assert in_error and "ProviderAuthError in virustotal_lookups" in line and "http://d/r" in line


def test_a_rejected_value_is_reported_in_error_with_its_reason():
    """The analyst reads why nothing was enriched, not 'score none, verdict unknown'."""
    row = {"stix_id": "domain-name--x", "observable_status": "rejected", "score": None,
           "verdict": "unknown", "explanation": "unknown (no score): observable rejected: "
           "invalid_domain: invalid characters in label 'com/'"}
    line, in_error = summary(request("w", "evil.com/../../admin"), RunOutcome("SUCCESS"),
                             "http://d/r", row)
    assert in_error
    assert line == ("cti-assets: evil.com/../../admin not enriched: unknown (no score): "
                    "observable rejected: invalid_domain: invalid characters in label 'com/'; "
                    "run http://d/r")
    scored = dict(row, observable_status="ok", score=73.0, verdict="malicious")
    assert summary(request("w"), RunOutcome("SUCCESS"), "http://d/r", scored) == (
        "cti-assets: 45.83.12.7 score 73, verdict malicious; run http://d/r", False)


def test_an_observable_no_provider_may_see_is_reported_as_not_sent_and_not_written():
    row = {"stix_id": "ipv4-addr--x", "observable_status": "ok", "score": 0.0,
           "verdict": "unknown", "explanation": "unknown (0/100): not answered: VirusTotal "
           "skipped:tlp", "writeback_status": "not_written",
           "writeback_reason": "no_provider_asked"}
    line, in_error = summary(request("w"), RunOutcome("SUCCESS"), "http://d/r", row)
    assert not in_error and "score 0" not in line
    assert line.startswith("cti-assets: 45.83.12.7 was sent to no provider (TLP, keys or "
                           "budget) and nothing was written back: unknown (0/100)")
