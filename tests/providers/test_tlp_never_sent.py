"""TLP fails closed end to end: import -> store -> observables table -> every provider.

Each RED or AMBER+STRICT observable is marked one way (by name through OpenCTI's marking
form, by TLP 1.0 id, by TLP 2.0 id alone, by a marking object in the store, by an id nothing
resolves) and none of them may reach the sandbox under the default maximum TLP (AMBER).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import stix2

from cti_assets.intake.observable import TLP2_MARKING_IDS, TLP_MARKING_IDS
from cti_assets.intake.observables import observables_frame
from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import DEFAULT_MAX_TLP, KEY_VARS, settings_from_env
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.providers.ratelimit import SharedLimiter
from cti_assets.providers.runner import lookup_frame
from cti_assets.sources.bundle_files import import_bundles
from cti_assets.sources.local import LocalStixStore

DAY = datetime(2026, 3, 2, tzinfo=UTC)
KEYS = {var: f"{var.lower()}-value" for var in KEY_VARS.values() if var}
HOUSE_RED = "marking-definition--5b1f3b7a-1d6e-4d6c-9a53-0b7e9b0d1c01"
OPENCTI_RED = "marking-definition--6c2e6a0e-8a51-4a52-9d1f-7e1f2f6d3a02"
TLP1_AMBER_OBJECT = TLP_MARKING_IDS["TLP:AMBER"]  # stix2 allows the TLP 1.0 form at its id only
UNKNOWN = "marking-definition--8e4a8c20-ac73-4c74-9f31-9a3b4b8f5c04"
PAP_RED = "marking-definition--9f5b9d31-bd84-4d85-8a42-ab4c5c9a6d05"

MARKINGS = [
    {"type": "marking-definition", "spec_version": "2.1", "id": HOUSE_RED, "name": "house red",
     "created": "2022-10-01T00:00:00.000Z",
     "extensions": {"extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
         "extension_type": "property-extension", "tlp_2_0": "red"}}},
    # as OpenCTI exports a marking of its own: a statement carrying its real type beside it
    {"type": "marking-definition", "spec_version": "2.1", "id": OPENCTI_RED,
     "created": "2022-10-01T00:00:00.000Z", "definition_type": "statement", "name": "TLP:RED",
     "definition": {"statement": "TLP:RED"}, "x_opencti_definition_type": "TLP",
     "x_opencti_definition": "TLP:RED"},
    json.loads(stix2.TLP_AMBER.serialize()),
    {"type": "marking-definition", "spec_version": "2.1", "id": PAP_RED,
     "created": "2022-10-01T00:00:00.000Z", "definition_type": "statement", "name": "PAP:RED",
     "definition": {"statement": "PAP:RED"}, "x_opencti_definition_type": "PAP",
     "x_opencti_definition": "PAP:RED"},
]
# value -> (markings, may it be sent under max TLP AMBER)
CASES: dict[str, tuple[list[str], bool]] = {
    "45.83.71.1": ([TLP_MARKING_IDS["TLP:RED"]], False),  # TLP 1.0 id
    "45.83.71.2": ([TLP2_MARKING_IDS["TLP:RED"]], False),  # TLP 2.0 id alone
    "45.83.71.3": ([TLP2_MARKING_IDS["TLP:AMBER+STRICT"]], False),
    "45.83.71.4": ([TLP_MARKING_IDS["TLP:AMBER+STRICT"]], False),  # OpenCTI's id
    "45.83.71.5": ([HOUSE_RED], False),  # TLP 2.0 extension object in the store
    "45.83.71.6": ([OPENCTI_RED], False),  # OpenCTI's form, by name
    "45.83.71.7": ([UNKNOWN], False),  # resolves to nothing: fail closed
    "45.83.71.8": ([PAP_RED, UNKNOWN], False),
    "45.83.71.9": ([TLP1_AMBER_OBJECT], True),  # TLP 1.0 object under its own id
    "45.83.71.10": ([TLP2_MARKING_IDS["TLP:GREEN"], PAP_RED], True),
    "45.83.71.11": ([], True),  # unmarked: CTI_UNMARKED_TLP (CLEAR)
}


@pytest.fixture
def observables(tmp_path, monkeypatch):
    monkeypatch.delenv("CTI_UNMARKED_TLP", raising=False)
    ipv4 = [{"type": "ipv4-addr", "spec_version": "2.1", "id": f"ipv4-addr--{n:08d}-0000-4000"
             f"-8000-000000000000", "value": value,
             **({"object_marking_refs": refs} if refs else {})}
            for n, (value, (refs, _)) in enumerate(CASES.items())]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--0a0b0c0d-0000-4000-8000-"
                                "000000000000", "objects": [*MARKINGS, *ipv4]}))
    store = LocalStixStore(tmp_path / "store.sqlite")
    import_bundles(store, [path], created_at=DAY)
    return observables_frame(store.observables_created_between(DAY, DAY + timedelta(days=1)))


def test_the_table_says_why_each_tlp(observables):
    by_value = observables.set_index("value")
    assert by_value.loc["45.83.71.7", "tlp"] == "TLP:RED"
    assert by_value.loc["45.83.71.7", "tlp_reason"] == f"tlp_unresolved: {UNKNOWN}"
    assert by_value.loc["45.83.71.2", "tlp"] == "TLP:RED"
    assert by_value.loc["45.83.71.3", "tlp"] == "TLP:AMBER+STRICT"
    assert by_value.loc["45.83.71.9", "tlp"] == "TLP:AMBER"
    assert by_value.loc["45.83.71.10", "tlp"] == "TLP:GREEN"
    assert by_value.loc["45.83.71.11", ["tlp", "tlp_reason"]].tolist() == ["TLP:CLEAR",
                                                                           "unmarked"]


@pytest.mark.parametrize("provider", [p for p in base.ALL_PROVIDERS if p != base.NETWORK_CONTEXT])
def test_red_and_strict_never_reach_a_provider(provider, observables, sb, tmp_path):
    assert DEFAULT_MAX_TLP == "TLP:AMBER"
    env = {**sb.base_urls, **KEYS}
    conf = replace(settings_from_env(provider, env), max_retries=1, backoff_base_s=0.01,
                   backoff_max_s=0.02)
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        out, _ = lookup_frame(provider, observables, conf, cache=cache,
                              limiter=SharedLimiter(provider, {}, path=tmp_path / "rl.sqlite"))
    requests = sb.requests
    sent = {r.observable for r in requests}
    wire = " ".join(f"{r.path} {r.query}" for r in requests)
    in_scope = "IPv4-Addr" in PROVIDER_SCOPE[provider]
    expected_reason = base.SKIP_TLP if in_scope else base.SKIP_OUT_OF_SCOPE
    for value, (_, allowed) in CASES.items():
        if not allowed:
            assert value not in sent and f"{value}/" not in wire and f"{value}'" not in wire
            row = out[out["normalized_value"] == value].iloc[0]
            assert row["status"] == base.SKIPPED and row["reason"] == expected_reason
    if in_scope:  # the gate is not simply closed for everything
        assert sent == {v for v, (_, ok) in CASES.items() if ok}
        unresolved = out[out["normalized_value"] == "45.83.71.7"].iloc[0]
        assert "tlp_unresolved" in unresolved["message"]
