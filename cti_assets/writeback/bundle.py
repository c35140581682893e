"""Turns a partition's scores and threat context into one STIX 2.1 bundle for write-back.

Pure and deterministic: the same frames give a byte-identical bundle (timestamps come from
the evidence, writeback.timing; the write time only leaves out indicators already expired),
and every id is derived (pycti's `generate_id` helpers, never now()), so a rerun is an upsert.
It fixes what OpenCTI's enrichment connectors get wrong (anchors.md Part A) and survives the
platform's upsert rules (reference/pycti.md section 9):

- one Note per observable, with a stix id keyed on the observable and the author only, so a
  rerun updates that note instead of adding a new one (connectors#5825); its content names
  the observable, so the platform's content-derived note identity never merges two
  observables' notes;
- object confidence is the author's reliability (`WritebackConfig.confidence`, like a
  connector's confidence level), constant across runs, so the platform's confidence-gated
  upsert lets every rerun update; the score's own confidence is in the note text;
- the observable's verdict label `cti:<verdict>` is the only one it carries: the others are
  listed under sources.base.REMOVE_LABELS for the source to
  remove (upserts only ever add labels);
- the score written is `final_score`, as scoring decided it under its policy (scoring.policy
  is the one owner: by default an existing higher score is never lowered);
- indicators live for hours to weeks depending on how volatile the type is, not years;
- every derived object carries the source observable's markings exactly (no hard-coded
  TLP:WHITE, and nothing added to an unmarked observable: the TLP assumed for unmarked data
  only gates providers).

Rejected observables write nothing.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, SupportsFloat

import pandas as pd
from pycti import Identity, Indicator, Note, StixCoreRelationship

from cti_assets.scoring.components import parse_components
from cti_assets.scoring.model import VERDICTS
from cti_assets.sources.base import REMOVE_LABELS

# The STIX 2.1 / OpenCTI namespace; used here only for the bundle id.
_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
# The author never changes, so its timestamps are a constant (keeps its bytes stable).
_AUTHOR_TIMESTAMP = "2024-01-01T00:00:00.000Z"

# OpenCTI entity type -> STIX SCO type and the property holding the value.
_STIX_TYPE: dict[str, str] = {
    "IPv4-Addr": "ipv4-addr",
    "IPv6-Addr": "ipv6-addr",
    "Domain-Name": "domain-name",
    "Hostname": "hostname",
    "Url": "url",
    "StixFile": "file",
}

# Indicator lifetimes: an IP is reassigned within days (cloud, residential, VPN exits), a URL
# is usually taken down within a couple of weeks, a domain lives longer, a hash never changes
# meaning. A rerun refreshes valid_until, so short lifetimes cost nothing for live threats.
DEFAULT_LIFETIME_HOURS: dict[str, int] = {
    "IPv4-Addr": 7 * 24,
    "IPv6-Addr": 7 * 24,
    "Url": 14 * 24,
    "Domain-Name": 30 * 24,
    "Hostname": 30 * 24,
    "StixFile": 365 * 24,
}

# Provider fields whose values become labels, e.g. `cti:greynoise:scanner`.
_TAG_FIELDS = ("tags", "classification", "categories")
_MAX_TAG_LABELS = 20
_HASH_PREFERENCE = ("SHA-256", "SHA-1", "MD5")
_TYPE_ORDER = {"identity": 0, "indicator": 2, "note": 3, "relationship": 4}


@dataclass
class WritebackConfig:
    """What the write-back creates and how."""

    indicator_threshold: int = 70
    indicator_lifetime_hours: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_LIFETIME_HOURS)
    )
    author_name: str = "cti-assets"
    label_prefix: str = "cti"
    # How much the platform should trust what we write (0..100), the same for every run.
    confidence: int = 75

    def __post_init__(self) -> None:
        if not 0 <= self.indicator_threshold <= 100:
            raise ValueError("indicator_threshold must lie in 0..100")
        if not 0 <= self.confidence <= 100:
            raise ValueError("confidence must lie in 0..100")

    def verdict_label(self, verdict: str) -> str:
        return f"{self.label_prefix}:{_label_part(verdict)}"


def stix_time(moment: datetime) -> str:
    """STIX timestamp with milliseconds, UTC, `Z` suffix (naive datetimes are taken as UTC)."""
    moment = pd.Timestamp(moment).to_pydatetime()
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def author_identity(name: str) -> dict:
    """The Identity every derived object points to as created_by_ref."""
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": Identity.generate_id(name, "organization"),
        "created": _AUTHOR_TIMESTAMP,
        "modified": _AUTHOR_TIMESTAMP,
        "name": name,
        "identity_class": "organization",
        "description": "Automated enrichment and scoring pipeline (cti-assets).",
    }


def note_id(author_name: str, observable_stix_id: str) -> str:
    """One note per (author, observable): independent of the evidence, so reruns update it."""
    return Note.generate_id(None, f"{author_name} enrichment summary of {observable_stix_id}")


def stix_pattern(entity_type: str, value: str, hash_type: str | None = None) -> str:
    """The STIX pattern matching one observable, with quotes and backslashes escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    if entity_type == "StixFile":
        if hash_type not in _HASH_PREFERENCE:
            raise ValueError(f"file pattern needs a hash type in {_HASH_PREFERENCE}")
        return f"[file:hashes.'{hash_type}' = '{escaped}']"
    return f"[{_STIX_TYPE[entity_type]}:value = '{escaped}']"


def build_bundle(
    scores: pd.DataFrame,
    context: pd.DataFrame | None,
    observables: pd.DataFrame,
    config: WritebackConfig,
    written_at: datetime,
    scored_at: Mapping[str, datetime] | None = None,
) -> dict:
    """One STIX 2.1 bundle (plain dicts) for every scored, non-rejected observable.

    `scored_at` (stix_id -> when its evidence was gathered, writeback.timing) dates the notes
    and starts the indicators' windows; an observable without one uses its `created_at`.
    `written_at` is when the bundle will be written: an indicator whose window has closed by
    then is left out (the platform would create it revoked)."""
    written = pd.Timestamp(stix_time(written_at)).to_pydatetime()
    author = author_identity(config.author_name)
    source_rows = _rows_by_stix_id(observables)
    links_by_id = _links_by_stix_id(context)
    objects: dict[str, dict] = {}
    for row in scores.sort_values("stix_id").to_dict("records"):
        row = {key: _clean(value) for key, value in row.items()}
        if row.get("observable_status") == "rejected" or row.get("entity_type") not in _STIX_TYPE:
            continue
        source = source_rows.get(row["stix_id"], {})
        if source.get("status") == "rejected":
            continue
        moment = (scored_at or {}).get(row["stix_id"]) or source.get("created_at") or written_at
        derived = _observable_objects(
            row, source, links_by_id.get(row["stix_id"], []), config, author["id"],
            stix_time(moment), written,
        )
        for obj in derived:
            if not obj.get("object_marking_refs"):  # unmarked stays unmarked (STIX: no [])
                obj.pop("object_marking_refs", None)
            objects[obj["id"]] = obj
    if objects:
        objects[author["id"]] = author
    ordered = sorted(objects.values(), key=lambda o: (_TYPE_ORDER.get(o["type"], 1), o["id"]))
    ids = json.dumps([[o["id"], o.get("modified")] for o in ordered])
    return {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid5(_NAMESPACE, ids)}",
        "objects": ordered,
    }


def _observable_objects(
    row: dict,
    source: dict,
    links: list[dict],
    config: WritebackConfig,
    author_id: str,
    when: str,
    written: datetime,
) -> list[dict]:
    entity_type = row["entity_type"]
    markings = sorted(set(_string_list(source.get("marking_ids"))))
    components = parse_components(_clean(row.get("components")))
    score = None if row.get("final_score") is None else int(row["final_score"])
    verdict = str(row.get("verdict") or "unknown")
    confidence = config.confidence
    observable = _observable(row, source, components, config, score, verdict, markings)
    objects = [observable]
    note: dict[str, Any] = {
        "type": "note",
        "spec_version": "2.1",
        "id": note_id(config.author_name, row["stix_id"]),
        "created": when,
        "modified": when,
        "created_by_ref": author_id,
        "abstract": f"{config.author_name}: {verdict}"
        + (f", score {score}" if score is not None else ""),
        "content": _note_content(row, source, components, links, score, verdict),
        "object_refs": [row["stix_id"]],
        "note_types": ["analysis"],
        "confidence": confidence,
        "object_marking_refs": markings,
    }
    objects.append(note)
    indicator = None
    final_score = row.get("final_score")
    if (
        verdict == "malicious"
        and final_score is not None
        and int(final_score) >= config.indicator_threshold
        and _indicator_window_open(config, entity_type, when, written)
    ):
        hours = config.indicator_lifetime_hours.get(entity_type)
        if hours is None:
            raise ValueError(f"no indicator lifetime configured for {entity_type}")
        valid_until = pd.Timestamp(when).to_pydatetime() + timedelta(hours=hours)
        value = row.get("normalized_value") or source.get("normalized_value")
        hash_type = _hash_type(row, source) if entity_type == "StixFile" else None
        pattern = stix_pattern(entity_type, str(value), hash_type)
        indicator = {
            "type": "indicator",
            "spec_version": "2.1",
            "id": Indicator.generate_id(pattern),
            "created": when,
            "modified": when,
            "created_by_ref": author_id,
            "name": str(value),
            "description": f"{verdict} according to {config.author_name}"
            f" (score {int(final_score)})",
            "indicator_types": ["malicious-activity"],
            "pattern": pattern,
            "pattern_type": "stix",
            "valid_from": when,
            "valid_until": stix_time(valid_until),
            "labels": [config.verdict_label(verdict)],
            "confidence": confidence,
            "x_opencti_score": int(final_score),
            "x_opencti_main_observable_type": entity_type,
            "object_marking_refs": markings,
        }
        objects.append(indicator)
        objects.append(
            _relationship("based-on", indicator["id"], row["stix_id"], when, author_id,
                          markings, confidence, "indicator derived from the observable")
        )
    for link in _unique_links(links):
        if indicator is not None:
            relationship = _relationship(
                "indicates", indicator["id"], link["entity_id"], when, author_id, markings,
                confidence, _link_description(link),
            )
        elif link.get("via") == "direct":
            continue  # the source already holds this link; nothing new to say
        else:
            relationship = _relationship(
                "related-to", row["stix_id"], link["entity_id"], when, author_id, markings,
                confidence, _link_description(link),
            )
        objects.append(relationship)
    return objects


def _observable(
    row: dict,
    source: dict,
    components: list[dict],
    config: WritebackConfig,
    score: int | None,
    verdict: str,
    markings: list[str],
) -> dict:
    entity_type = row["entity_type"]
    raw_value = source.get("value") or row.get("normalized_value")
    observable: dict[str, Any] = {
        "type": _STIX_TYPE[entity_type],
        "spec_version": "2.1",
        "id": row["stix_id"],
    }
    if entity_type == "StixFile":
        observable["hashes"] = {_hash_type(row, source): str(raw_value)}
    else:
        observable["value"] = str(raw_value)
    if score is not None:
        observable["x_opencti_score"] = score
    current = config.verdict_label(verdict)
    stale = sorted({config.verdict_label(other) for other in VERDICTS} - {current})
    labels = set(_string_list(source.get("labels"))) - set(stale)
    labels.add(current)
    labels.update(_tag_labels(components, config.label_prefix))
    observable["x_opencti_labels"] = sorted(labels)
    observable[REMOVE_LABELS] = stale
    references = _external_references(components, entity_type, row.get("normalized_value"))
    if references:
        observable["x_opencti_external_references"] = references
    if markings:
        observable["object_marking_refs"] = markings
    return observable


def _relationship(
    relationship_type: str,
    source_ref: str,
    target_ref: str,
    when: str,
    author_id: str,
    markings: list[str],
    confidence: int,
    description: str,
) -> dict:
    relationship = {
        "type": "relationship",
        "spec_version": "2.1",
        "id": StixCoreRelationship.generate_id(relationship_type, source_ref, target_ref),
        "created": when,
        "modified": when,
        "created_by_ref": author_id,
        "relationship_type": relationship_type,
        "source_ref": source_ref,
        "target_ref": target_ref,
        "description": description,
        "confidence": confidence,
        "object_marking_refs": markings,
    }
    return relationship


def _note_content(
    row: dict, source: dict, components: list[dict], links: list[dict], score: int | None,
    verdict: str,
) -> str:
    value = source.get("value") or row.get("normalized_value")
    lines = [
        # Names the observable: the platform derives a note's identity from its content.
        f"**Observable:** {row['entity_type']} `{value}` ({row['stix_id']})",
        f"**Verdict:** {verdict}",
        f"**Score written:** {score if score is not None else 'unchanged'}"
        f" (model {_fmt(row.get('score'))}, final {_fmt(row.get('final_score'))},"
        f" previous {_fmt(row.get('existing_score'))})",
        f"**Score confidence:** {_fmt(_confidence(row.get('confidence')))}",
        f"**Policy:** {_fmt(row.get('policy_action'))}",
        "",
        str(row.get("explanation") or "No explanation recorded."),
    ]
    if components:
        lines += ["", "| provider | rule | field | value | contribution |", "|---|---|---|---|---|"]
        for item in sorted(components, key=lambda c: json.dumps(c, sort_keys=True, default=str)):
            cells = [item.get(key) for key in ("provider", "rule", "field", "value",
                                                "contribution")]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    if links:
        lines += ["", "**Threat context:**"]
        for link in _unique_links(links):
            lines.append(f"- {_link_description(link)}")
    return "\n".join(lines)


def _indicator_window_open(
    config: WritebackConfig, entity_type: str, when: str, written: datetime
) -> bool:
    hours = config.indicator_lifetime_hours.get(entity_type)
    if hours is None:
        raise ValueError(f"no indicator lifetime configured for {entity_type}")
    return pd.Timestamp(when).to_pydatetime() + timedelta(hours=hours) > written


def _link_description(link: dict) -> str:
    origin = link.get("provider") or link.get("via") or "source"
    name = link.get("name") or link["entity_id"]
    text = f"{link.get('entity_type', 'entity')} {name} (via {origin}"
    if link.get("reported_name") and link.get("reported_name") != name:
        text += f", reported as {link['reported_name']}"
    return text + ")"


def _unique_links(links: list[dict]) -> list[dict]:
    """One link per threat entity, the first in a stable order winning."""
    chosen: dict[str, dict] = {}
    for link in sorted(links, key=lambda item: json.dumps(item, sort_keys=True, default=str)):
        if isinstance(link.get("entity_id"), str) and link["entity_id"] not in chosen:
            chosen[link["entity_id"]] = link
    return [chosen[key] for key in sorted(chosen)]


def _external_references(
    components: list[dict], entity_type: str, value: object
) -> list[dict]:
    if not value:
        return []
    try:
        from cti_assets.providers.registry import provider_page_url
    except ImportError:
        return []
    references = []
    for provider in sorted({str(c["provider"]) for c in components if c.get("provider")}):
        try:
            url = provider_page_url(provider, entity_type, str(value))
        except (KeyError, ValueError):
            url = None
        if url:
            references.append(
                {"source_name": provider, "url": url, "description": f"{provider} report"}
            )
    return references


def _tag_labels(components: list[dict], prefix: str) -> list[str]:
    labels: set[str] = set()
    for item in components:
        if item.get("field") not in _TAG_FIELDS or not item.get("provider"):
            continue
        values = item.get("value")
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                labels.add(f"{prefix}:{_label_part(item['provider'])}:{_label_part(value)}")
    return sorted(labels)[:_MAX_TAG_LABELS]


def _label_part(value: object) -> str:
    text = re.sub(r"\s+", "-", str(value).strip().lower())
    return text[:60] or "unknown"


def _hash_type(row: dict, source: dict) -> str:
    hash_type = source.get("hash_type") or row.get("hash_type")
    if hash_type not in _HASH_PREFERENCE:
        value = str(source.get("value") or row.get("normalized_value") or "")
        hash_type = {32: "MD5", 40: "SHA-1", 64: "SHA-256"}.get(len(value))
    if hash_type is None:
        raise ValueError(f"cannot tell the hash type of file observable {row['stix_id']}")
    return hash_type


def _confidence(value: SupportsFloat | str | None) -> int | None:
    """Confidence as STIX wants it (0..100): a float in [0, 1] is a fraction and is scaled."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    if isinstance(value, float) and 0 <= number <= 1:
        number *= 100
    return max(0, min(100, round(number)))


def _rows_by_stix_id(frame: pd.DataFrame) -> dict[str, dict]:
    if frame is None or frame.empty:
        return {}
    return {
        row["stix_id"]: {key: _clean(value) for key, value in row.items()}
        for row in frame.to_dict("records")
    }


def _links_by_stix_id(context: pd.DataFrame | None) -> dict[str, list[dict]]:
    if context is None or context.empty:
        return {}
    links: dict[str, list[dict]] = {}
    for row in context.to_dict("records"):
        links.setdefault(row["stix_id"], []).extend(_json_list(_clean(row.get("links"))))
    return links


def _json_list(value: object) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _string_list(value: object) -> list[str]:
    if value is None or isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Iterable):
        return [str(item) for item in value if item is not None and str(item)]
    return []


def _clean(value: object) -> object:
    """pandas' missing markers (NA, NaN, NaT) as None; numpy arrays as lists."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, list | dict):
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _fmt(value: object) -> str:
    return "n/a" if value is None else str(value)


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text.replace("|", "\\|").replace("\n", " ")
