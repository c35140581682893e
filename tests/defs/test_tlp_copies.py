"""A value is as secret as its most restrictive copy: STIX allows one value under several ids
(random UUIDv4 ids), and the embedded store keeps them apart. A GREEN copy of a value another
copy marks RED, earlier or the same day, written differently or not, never reaches a provider,
and the write-back writes no "unknown" score for what nobody was allowed to ask about."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pytest

from cti_assets.intake.observable import TLP2_MARKING_IDS
from cti_assets.providers.base import ALL_PROVIDERS

pytestmark = pytest.mark.slow

EARLIER = datetime(2026, 11, 18, 9, tzinfo=UTC)
DAY = "2026-11-20"
RED = TLP2_MARKING_IDS["TLP:RED"]
GREEN = TLP2_MARKING_IDS["TLP:GREEN"]


def sco(kind: str, n: int, value: str, marking: str | None) -> dict:
    return {"type": kind, "spec_version": "2.1", "id": f"{kind}--6a0c8d52-0c1e-4b7a-9d2e-{n:012d}",
            "value": value, **({"object_marking_refs": [marking]} if marking else {})}


MD5 = "5d41402abc4b2a76b9719d911017c592"
SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
EARLIER_OBJECTS = [  # the RED copies, two days before
    sco("ipv4-addr", 1, "45.83.74.1", RED),
    sco("hostname", 7, "relay.quillmere-ops.com", RED),  # providers look names up either way
    {"type": "file", "spec_version": "2.1", "id": "file--6a0c8d52-0c1e-4b7a-9d2e-000000000008",
     "hashes": {"MD5": MD5}, "object_marking_refs": [RED]},
]
DAY_OBJECTS = [
    sco("ipv4-addr", 2, "45.83.74.1", GREEN),  # GREEN copy of the earlier RED one
    sco("domain-name", 3, "Quillmere-Ops.com", RED),  # same day, written differently
    sco("domain-name", 4, "quillmere-ops.com", GREEN),
    sco("ipv4-addr", 5, "45.83.74.2", GREEN),  # only GREEN copies: sent as usual
    sco("ipv4-addr", 6, "45.83.74.2", None),
    sco("domain-name", 9, "relay.quillmere-ops.com", GREEN),
    {"type": "file", "spec_version": "2.1", "id": "file--6a0c8d52-0c1e-4b7a-9d2e-000000000010",
     "hashes": {"MD5": MD5, "SHA-256": SHA256}, "object_marking_refs": [GREEN]},  # asked by SHA-256
]


@pytest.fixture
def day(tmp_path, monkeypatch):
    from cti_assets.cli import demo, runs
    from cti_assets.sandbox import ProviderSandbox
    from cti_assets.sources.bundle_files import import_bundles
    from cti_assets.sources.local import LocalStixStore

    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CTI_UNMARKED_TLP", raising=False)
    for name in ("OPENCTI_URL", "CTI_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    store = LocalStixStore()
    for n, (moment, objects) in enumerate(((EARLIER, EARLIER_OBJECTS),
                                           (datetime(2026, 11, 20, 9, tzinfo=UTC), DAY_OBJECTS))):
        path = tmp_path / f"bundle{n}.json"
        path.write_text(json.dumps({"type": "bundle", "objects": objects,
                                    "id": f"bundle--6a0c8d52-0c1e-4b7a-9d2e-{n:012d}"}))
        import_bundles(store, [path], created_at=moment)
    with ProviderSandbox(port=0) as sandbox:
        for name, value in sandbox.base_urls.items():
            monkeypatch.setenv(name, value)
        for provider in demo.KEYED_PROVIDERS:
            monkeypatch.setenv(f"{provider}_API_KEY", "test-key")
        for provider in ALL_PROVIDERS:
            monkeypatch.setenv(f"{provider.upper()}_PER_SECOND", "100")
        monkeypatch.setenv("VIRUSTOTAL_PER_MINUTE", "6000")
        result = runs.load_defs().resolve_job_def("enrichment").execute_in_process(
            partition_key=DAY, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        assert result.success
        yield sandbox, store


def test_a_value_takes_the_tlp_of_its_most_restrictive_copy_and_never_leaves(day):
    from cti_assets.storage.outputs import read_partition

    sandbox, store = day
    sent = {request.observable for request in sandbox.requests}
    assert "45.83.74.1" not in sent and "quillmere-ops.com" not in sent
    assert "relay.quillmere-ops.com" not in sent and SHA256 not in sent and MD5 not in sent
    assert "45.83.74.2" in sent  # the gate is not closed for everything

    table = read_partition("observables", DAY).set_index("stix_id")
    green_copy, red_earlier = DAY_OBJECTS[0]["id"], EARLIER_OBJECTS[0]["id"]
    assert table.loc[green_copy, "tlp"] == "TLP:RED"
    assert table.loc[green_copy, "tlp_reason"] == f"stricter_copy: {red_earlier}"
    assert table.loc[DAY_OBJECTS[2]["id"], "tlp_reason"] == (
        f"stricter_copy: {DAY_OBJECTS[1]['id']}")
    assert table.loc[DAY_OBJECTS[3]["id"], "tlp"] == "TLP:GREEN"  # an unmarked copy: CLEAR
    for today, earlier in ((DAY_OBJECTS[5], EARLIER_OBJECTS[1]),
                           (DAY_OBJECTS[6], EARLIER_OBJECTS[2])):
        assert table.loc[today["id"], "tlp_reason"] == f"stricter_copy: {earlier['id']}"

    written = read_partition("opencti_writeback", DAY).set_index("stix_id")
    for obj in DAY_OBJECTS[:3]:
        assert written.loc[obj["id"], "writeback_status"] == "not_written"
        assert written.loc[obj["id"], "reason"] == "no_provider_asked"
        stored = store.get(obj["id"])
        assert "x_opencti_score" not in stored and "x_opencti_labels" not in stored
    assert written.loc[DAY_OBJECTS[3]["id"], "writeback_status"] == "written"
