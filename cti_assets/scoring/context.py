"""Threat context: the known actors, intrusion sets, campaigns and malware tied to an observable.

Three paths make a link: a relationship in the source ("direct"), an indicator based on the
observable ("indicator"), or a provider naming a known entity ("provider_name": the GreyNoise
actor name, VirusTotal threat names and tags, ThreatFox and URLhaus families and tags,
MalwareBazaar signatures, OTX malware families and adversaries). Provider names match entity
names and aliases only exactly after normalisation (case, spaces and punctuation ignored), and
VirusTotal labels such as "trojan.emotet/abc" are also tried segment by segment; there is no
substring matching, so "not-emotet-ish" never matches "Emotet".
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from cti_assets.providers.base import (
    GREYNOISE,
    MALWAREBAZAAR,
    OTX,
    THREATFOX,
    URLHAUS,
    VIRUSTOTAL,
)
from cti_assets.providers.fields import column
from cti_assets.sources.base import ThreatEntity, ThreatLink
from cti_assets.tables import CONTEXT_COLUMNS

# Provider columns whose values may name a threat entity.
NAME_SOURCES: tuple[tuple[str, str], ...] = (
    (GREYNOISE, "name"),
    (VIRUSTOTAL, "threat_names"),
    (VIRUSTOTAL, "tags"),
    (THREATFOX, "malware"),
    (THREATFOX, "malware_aliases"),
    (URLHAUS, "signatures"),
    (URLHAUS, "tags"),
    (MALWAREBAZAAR, "signature"),
    (MALWAREBAZAAR, "tags"),
    (OTX, "malware_families"),
    (OTX, "adversaries"),
)
# The merged table's columns threat context reads: the ids and each name source with its status.
MERGED_COLUMNS: list[str] = ["stix_id", *dict.fromkeys(
    name for provider, field in NAME_SOURCES
    for name in (column(provider, "status"), column(provider, field)))]

# Label segments too generic to name an entity on their own.
GENERIC_SEGMENTS = frozenset(
    {"trojan", "malware", "generic", "backdoor", "virus", "worm", "unknown", "riskware",
     "adware", "downloader", "dropper", "exploit", "agent", "heur", "win32", "win64", "msil"}
)
MIN_NAME_LENGTH = 3
_SEGMENT_SPLIT = re.compile(r"[./:!]")
_VIA_ORDER = {"direct": 0, "indicator": 1, "provider_name": 2}
_TYPE_COUNTS = {
    "threat-actor": "n_threat_actors",
    "intrusion-set": "n_intrusion_sets",
    "campaign": "n_campaigns",
    "malware": "n_malware",
}


def normalise_name(name: str) -> str:
    """Casefolded letters and digits only: "APT-28", "apt 28" and "Apt_28" all give "apt28"."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in folded if ch.isalnum())


def build_threat_context(
    observables: pd.DataFrame,
    links: list[ThreatLink],
    entities: list[ThreatEntity],
    merged: pd.DataFrame | Iterable[pd.DataFrame] | None,
) -> pd.DataFrame:
    """One row per observable with its deduplicated threat links and per-type counts.

    `merged`: the merged enrichment whole or in slices of rows (only `MERGED_COLUMNS` are
    read), so a large day's provider names are matched without the whole table in memory."""
    stix_ids = observables["stix_id"].astype(object).to_numpy()
    row_of: dict[str, list[int]] = {}
    for position, stix_id in enumerate(stix_ids):
        row_of.setdefault(stix_id, []).append(position)
    per_row: dict[int, dict[tuple, dict[str, Any]]] = {}

    def add(position: int, record: dict[str, Any]) -> None:
        key = (record["entity_id"], record["via"], record["relationship_type"],
               record["indicator_id"], record["provider"])
        per_row.setdefault(position, {}).setdefault(key, record)

    for link in links:
        for position in row_of.get(link.observable_stix_id, ()):
            add(position, _record(link.entity, link.via, link.relationship_type,
                                  link.indicator_stix_id, None, None))
    known = {entity.stix_id: entity for entity in entities}
    known.update({link.entity.stix_id: link.entity for link in links})
    if merged is not None and known:
        index = _name_index(known.values())
        matches: dict[str, list[ThreatEntity]] = {}
        for part in [merged] if isinstance(merged, pd.DataFrame) else merged:
            merged_ids = part["stix_id"].astype(object).to_numpy()
            for provider, reported, entities_hit, merged_positions in _reported_names(
                    part, index, matches):
                for merged_pos in merged_positions:
                    for position in row_of.get(merged_ids[merged_pos], ()):
                        for entity in entities_hit:
                            add(position, _record(entity, "provider_name", None, None,
                                                  provider, reported))
    return _frame(observables, per_row)


def _record(
    entity: ThreatEntity,
    via: str,
    relationship_type: str | None,
    indicator_id: str | None,
    provider: str | None,
    reported_name: str | None,
) -> dict[str, Any]:
    return {
        "entity_id": entity.stix_id,
        "entity_type": entity.entity_type,
        "name": entity.name,
        "via": via,
        "relationship_type": relationship_type,
        "indicator_id": indicator_id,
        "provider": provider,
        "reported_name": reported_name,
    }


def _name_index(entities: Any) -> dict[str, list[ThreatEntity]]:
    index: dict[str, list[ThreatEntity]] = {}
    for entity in sorted(entities, key=lambda e: e.stix_id):
        for name in (entity.name, *entity.aliases):
            key = normalise_name(name or "")
            if len(key) >= MIN_NAME_LENGTH and entity not in index.get(key, []):
                index.setdefault(key, []).append(entity)
    return index


def _match(reported: str, index: dict[str, list[ThreatEntity]]) -> list[ThreatEntity]:
    whole = normalise_name(reported)
    if whole in index:
        return index[whole]
    found: list[ThreatEntity] = []
    for segment in _SEGMENT_SPLIT.split(reported):
        key = normalise_name(segment)
        if key in GENERIC_SEGMENTS or key == whole:
            continue
        for entity in index.get(key, []):
            if entity not in found:
                found.append(entity)
    return found


def _reported_names(
    merged: pd.DataFrame, index: dict[str, list[ThreatEntity]],
    matches: dict[str, list[ThreatEntity]],
) -> Iterator[tuple[str, str, list[ThreatEntity], np.ndarray]]:
    """(provider, reported name, matched entities, merged row positions) per matching name.

    Names are matched once per distinct value (`matches` keeps them across slices); only rows
    with status ok are read.
    """
    for provider, field_name in NAME_SOURCES:
        name_col, status_col = column(provider, field_name), column(provider, "status")
        if name_col not in merged.columns or status_col not in merged.columns:
            continue
        ok = (merged[status_col] == "ok").fillna(False).to_numpy(dtype=bool)
        values = merged[name_col].reset_index(drop=True)[ok].explode().dropna()
        if values.empty:
            continue
        codes, uniques = pd.factorize(values.astype(str))
        positions = values.index.to_numpy()
        for code, name in enumerate(uniques):
            if name not in matches:
                matches[name] = _match(name, index)
            entities_hit = matches[name]
            if entities_hit:
                yield provider, name, entities_hit, np.unique(positions[codes == code])


def _frame(observables: pd.DataFrame, per_row: dict[int, dict[tuple, dict]]) -> pd.DataFrame:
    n_rows = len(observables)
    links_json = np.full(n_rows, "[]", dtype=object)
    counts = {name: np.zeros(n_rows, dtype=np.int64) for name in _TYPE_COUNTS.values()}
    n_known = np.zeros(n_rows, dtype=np.int64)
    summary = np.full(n_rows, None, dtype=object)
    for position, records in per_row.items():
        ordered = sorted(records.values(), key=_sort_key)
        links_json[position] = json.dumps(ordered, sort_keys=True)
        distinct = {r["entity_id"]: r for r in reversed(ordered)}  # keep the first path
        for record in distinct.values():
            counts[_TYPE_COUNTS[record["entity_type"]]][position] += 1
        n_known[position] = len({r["entity_id"] for r in ordered if r["via"] != "provider_name"})
        firsts = sorted(distinct.values(), key=_sort_key)
        summary[position] = "; ".join(
            f"{r['entity_type'].replace('-', ' ')} {r['name']}" for r in firsts
        )
    frame = pd.DataFrame(
        {
            "stix_id": observables["stix_id"].to_numpy(),
            "normalized_value": observables["normalized_value"].to_numpy()
            if "normalized_value" in observables.columns
            else None,
            "links": links_json,
            **{name: pd.array(values, dtype="Int64") for name, values in counts.items()},
            "linked": pd.array(links_json != "[]", dtype="boolean"),
            "n_known_links": pd.array(n_known, dtype="Int64"),
            "link_summary": pd.array(summary, dtype="string"),
        }
    )
    return frame[list(CONTEXT_COLUMNS)]


def _sort_key(record: dict[str, Any]) -> tuple:
    return (
        _VIA_ORDER.get(record["via"], 9),
        record["entity_type"],
        record["name"],
        record["entity_id"],
        record["relationship_type"] or "",
        record["indicator_id"] or "",
        record["provider"] or "",
    )
