"""Import edge cases: duplicate ids within one import, a UTF-8 BOM, and SCO types no provider
looks up (kept in the observables table as skipped/out_of_scope, never sent anywhere)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cti_assets.cli.main import main
from cti_assets.intake.observables import counts_by_type_and_status, observables_frame
from cti_assets.providers import base
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import _gate
from cti_assets.sources.bundle_files import BundleError, import_bundles
from cti_assets.sources.local import LocalStixStore

CREATED_AT = datetime(2026, 3, 2, 9, tzinfo=UTC)
DAY = (CREATED_AT.replace(hour=0), CREATED_AT.replace(hour=0) + timedelta(days=1))
OUT_OF_SCOPE = [
    {"type": "email-addr", "value": "someone@example.org"},
    {"type": "mac-addr", "value": "00:1a:2b:3c:4d:5e"},
    {"type": "autonomous-system", "number": 64500},
    {"type": "mutex", "name": "Global\\\\x"},
    {"type": "user-agent", "value": "curl/8.0"},
]


def sco(stix_type: str, **properties) -> dict:
    return {"type": stix_type, "spec_version": "2.1", "id": f"{stix_type}--{uuid.uuid4()}",
            **properties}


def write_bundle(path: Path, *objects: dict, bom: bool = False) -> Path:
    text = json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects})
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture
def store(tmp_path) -> LocalStixStore:
    return LocalStixStore(tmp_path / "store.sqlite")


def test_conflicting_duplicates_are_an_error_naming_both_and_write_nothing(store, tmp_path):
    first = sco("ipv4-addr", value="198.51.100.7")
    other = {**first, "value": "198.51.100.8"}
    one = write_bundle(tmp_path / "one.json", sco("ipv4-addr", value="203.0.113.1"), first)
    two = write_bundle(tmp_path / "two.json", other)
    with pytest.raises(BundleError) as raised:
        import_bundles(store, [one, two], CREATED_AT)
    message = str(raised.value)
    assert first["id"] in message
    assert f"{one}: object 1" in message and f"{two}: object 0" in message
    assert store.counts_by_type() == {}


def test_conflicting_duplicates_inside_one_file_are_refused_too(store, tmp_path):
    first = sco("domain-name", value="example.org")
    path = write_bundle(tmp_path / "b.json", first, {**first, "value": "example.net"})
    with pytest.raises(BundleError, match="object 0 and .*object 1"):
        import_bundles(store, [path])
    assert store.counts_by_type() == {}


def test_identical_duplicates_are_one_object(store, tmp_path):
    obj = sco("ipv4-addr", value="198.51.100.9")
    path = write_bundle(tmp_path / "b.json", obj, dict(obj))
    report = import_bundles(store, [path], CREATED_AT)
    assert (report.objects, report.created, report.updated) == (1, 1, 0)
    assert store.counts_by_type() == {"ipv4-addr": 1}


def test_a_utf8_bom_is_accepted(store, tmp_path):
    path = write_bundle(tmp_path / "bom.json", sco("domain-name", value="bücher.example"),
                        bom=True)
    report = import_bundles(store, [path], CREATED_AT)
    assert report.created == 1


def test_cli_refuses_conflicting_duplicates_with_one_line_and_no_store(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    first = sco("url", value="https://example.com/")
    path = write_bundle(tmp_path / "b.json", first, {**first, "value": "https://example.net/"})
    assert main(["import", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and first["id"] in err
    assert LocalStixStore().counts_by_type() == {}


def test_every_sco_type_reaches_the_observables_table_out_of_scope_ones_skipped(store, tmp_path):
    in_scope = sco("ipv4-addr", value="198.51.100.10")
    others = [sco(o["type"], **{k: v for k, v in o.items() if k != "type"})
              for o in OUT_OF_SCOPE]
    import_bundles(store, [write_bundle(tmp_path / "b.json", in_scope, *others)], CREATED_AT)
    frame = observables_frame(store.observables_created_between(*DAY))
    assert sorted(frame["stix_id"]) == sorted(o["id"] for o in [in_scope, *others])
    rows = frame.set_index("stix_id")
    assert rows.loc[in_scope["id"], "status"] == "ok"
    for obj in others:
        assert rows.loc[obj["id"], "status"] == "skipped", obj["type"]
        assert rows.loc[obj["id"], "reason"] == "out_of_scope"
        assert rows.loc[obj["id"], "value"] != ""
    assert counts_by_type_and_status(frame)["Email-Addr"] == {"ok": 0, "rejected": 0,
                                                             "skipped": 1}


def test_a_skipped_observable_is_never_sent_even_with_a_value(monkeypatch):
    monkeypatch.setenv("VIRUSTOTAL_API_KEY", "k")
    settings = settings_from_env(base.VIRUSTOTAL)
    row = {"stix_id": "ipv4-addr--x", "entity_type": "IPv4-Addr",
           "normalized_value": "8.8.8.8", "tlp": "TLP:CLEAR", "status": "skipped",
           "reason": "out_of_scope"}
    gated = _gate(base.VIRUSTOTAL, row, settings)
    assert gated is not None
    assert (gated["status"], gated["reason"]) == (base.SKIPPED, base.SKIP_OUT_OF_SCOPE)
    assert _gate(base.VIRUSTOTAL, {**row, "status": "ok"}, settings) is None


def test_import_says_which_days_need_a_run(tmp_path, monkeypatch, capsys):
    """Backdated observables are out of the sensor's reach, whether their day has outputs or
    not; re-imported ones keep their day and need nothing; new ones of today on a day with
    outputs are the sensor's when it runs."""
    from datetime import UTC, datetime

    from cti_assets.storage.outputs import partition_path

    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for day in ("2026-03-02", today):
        stored = Path(partition_path("observables", day).path)
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(b"")  # the day has outputs
    path = write_bundle(tmp_path / "b.json", sco("ipv4-addr", value="198.51.100.50"),
                        sco("email-addr", value="x@example.org"))
    assert main(["import", str(path), "--created-at", "2026-03-02T10:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "2 new observable(s) were created before the sensor's look-back" in out
    assert "on 2026-03-02: a sensor whose watermark is past them will not pick them up" in out
    assert "cti-assets backfill --from 2026-03-02 --to 2026-03-02" in out

    path = write_bundle(tmp_path / "c.json", sco("ipv4-addr", value="198.51.100.51"))
    assert main(["import", str(path), "--created-at", "2026-03-03T10:00:00Z"]) == 0
    out = capsys.readouterr().out  # a day never materialised: still out of the sensor's reach
    assert "1 new observable(s) were created before" in out and "--from 2026-03-03" in out

    assert main(["import", str(path), "--created-at", "2026-03-05T10:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "0 new, 1 already present" in out
    assert "1 observable(s) were already in the store and keep their creation time" in out
    assert "backfill" not in out and "2026-03-05" not in out

    path = write_bundle(tmp_path / "d.json", sco("ipv4-addr", value="198.51.100.52"))
    assert main(["import", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"new observables fall on day(s) already materialised ({today})" in out
    assert "before the sensor's look-back" not in out
