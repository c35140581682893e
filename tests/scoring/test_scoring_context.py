"""threat_context: direct, indicator and provider-name links, deduplicated and counted."""

from __future__ import annotations

import json

import pandas as pd

from cti_assets.scoring.context import MERGED_COLUMNS, build_threat_context, normalise_name
from cti_assets.sources.base import ThreatEntity, ThreatLink
from cti_assets.storage.parquet import FrameBatches, StoredTable
from tests.scoring.scoring_factories import Lookup, merged_rows, observable

APT = ThreatEntity("intrusion-set--1", "intrusion-set", "Crimson Lynx", ("APT 99", "Red-Cat"))
EMOTET = ThreatEntity("malware--2", "malware", "Emotet", ("Heodo",))
ACTOR = ThreatEntity("threat-actor--3", "threat-actor", "Mallory")
CAMPAIGN = ThreatEntity("campaign--4", "campaign", "Winter Sale")
ENTITIES = [APT, EMOTET, ACTOR, CAMPAIGN]


def _merged(answers_per_row):
    return merged_rows([(observable(i), a) for i, a in enumerate(answers_per_row)])


def test_direct_and_indicator_links_are_counted_once_per_entity():
    merged = _merged([{}, {}])
    sid = merged["stix_id"].iloc[0]
    links = [
        ThreatLink(sid, APT, "direct", "related-to"),
        ThreatLink(sid, APT, "direct", "related-to"),  # duplicate
        ThreatLink(sid, APT, "indicator", "indicates", "indicator--9"),
        ThreatLink(sid, CAMPAIGN, "indicator", "attributed-to", "indicator--9"),
        ThreatLink("ipv4-addr--unknown", ACTOR, "direct", "related-to"),
    ]
    context = build_threat_context(merged, links, ENTITIES, None)
    first, second = context.iloc[0], context.iloc[1]
    assert len(json.loads(first["links"])) == 3
    assert (first["n_intrusion_sets"], first["n_campaigns"], first["n_threat_actors"]) == (1, 1, 0)
    assert bool(first["linked"]) and first["n_known_links"] == 2
    assert first["link_summary"] == "intrusion set Crimson Lynx; campaign Winter Sale"
    assert second["links"] == "[]" and not bool(second["linked"])
    assert list(context["stix_id"]) == list(merged["stix_id"])


def test_provider_names_match_names_and_aliases_exactly_after_normalising():
    merged = _merged([
        {"greynoise": Lookup(fields={"name": "apt-99"})},
        {"virustotal": Lookup(fields={"threat_names": ["trojan.emotet/abc"], "tags": ["HEODO"]})},
        {"virustotal": Lookup(fields={"threat_names": ["not-emotet-ish", "emotetx"]})},
        {"greynoise": Lookup(status="not_found", fields={"name": "Crimson Lynx"})},
        {"virustotal": Lookup(fields={"tags": ["HEODO"]})},
    ])
    context = build_threat_context(merged, [], ENTITIES, merged)
    gn_link = json.loads(context["links"].iloc[0])
    assert gn_link == [{
        "entity_id": APT.stix_id, "entity_type": "intrusion-set", "name": "Crimson Lynx",
        "via": "provider_name", "relationship_type": None, "indicator_id": None,
        "provider": "greynoise", "reported_name": "apt-99",
    }]
    vt_links = json.loads(context["links"].iloc[1])  # two names, one entity: one link
    assert [link["reported_name"] for link in vt_links] == ["trojan.emotet/abc"]
    assert context["n_malware"].iloc[1] == 1
    alias_link = json.loads(context["links"].iloc[4])
    assert [(link["name"], link["reported_name"]) for link in alias_link] == [("Emotet", "HEODO")]
    assert context["n_known_links"].iloc[1] == 0
    assert not bool(context["linked"].iloc[2])  # no substring matches
    assert not bool(context["linked"].iloc[3])  # only answers with status ok count


def test_merged_read_in_slices_of_its_name_columns_links_the_same(tmp_path):
    merged = _merged([
        {"greynoise": Lookup(fields={"name": "apt-99"})},
        {"virustotal": Lookup(fields={"tags": ["HEODO"]})},
        {},
        {"virustotal": Lookup(fields={"threat_names": ["trojan.emotet/abc"]})},
        {"greynoise": Lookup(fields={"name": "Mallory"})},
    ])
    path = tmp_path / "merged.parquet"
    FrameBatches([merged.iloc[:2], merged.iloc[2:]]).write(path)
    stored = StoredTable(path, MERGED_COLUMNS)
    assert "stix_id" in stored.columns and len(stored.columns) < len(merged.columns)
    whole = build_threat_context(merged, [], ENTITIES, merged)
    sliced = build_threat_context(merged, [], ENTITIES, stored.frames(2))
    pd.testing.assert_frame_equal(sliced, whole)
    assert list(sliced["linked"]) == [True, True, False, True, True]


def test_normalise_name_ignores_case_spaces_and_punctuation():
    assert normalise_name("APT-28") == normalise_name(" apt 28 ") == normalise_name("Apt_28")
    assert normalise_name("Émotet") == "émotet"
