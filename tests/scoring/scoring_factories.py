"""Small builders of observables, lookups and merged frames for the scoring tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.scoring.merge import merge_lookups

FETCHED_AT = datetime(2026, 3, 1, tzinfo=UTC)
DEFAULT_VALUES = {
    "IPv4-Addr": "203.0.113.7",
    "IPv6-Addr": "2001:db8::7",
    "Domain-Name": "example.org",
    "Hostname": "www.example.org",
    "Url": "http://example.org/x",
    "StixFile": "a" * 64,
}


@dataclass
class Lookup:
    """One provider's answer for one observable."""

    status: str = "ok"
    fields: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def digest_of(provider: str, stix_id: str, fields: dict) -> str:
    text = json.dumps([provider, stix_id, fields], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def observable(
    index: int = 0,
    entity_type: str = "IPv4-Addr",
    *,
    status: str = "ok",
    reason: str | None = None,
    existing_score: int | None = None,
) -> dict[str, Any]:
    value = DEFAULT_VALUES[entity_type]
    return {
        "internal_id": f"internal-{index}",
        "stix_id": f"{entity_type.lower()}--00000000-0000-4000-8000-{index:012d}",
        "entity_type": entity_type,
        "value": value,
        "normalized_value": None if status != "ok" else f"{index}.{value}",
        "hash_type": "SHA-256" if entity_type == "StixFile" else None,
        "tlp": "TLP:CLEAR",
        "marking_ids": [],
        "labels": [],
        "existing_score": existing_score,
        "created_at": FETCHED_AT,
        "status": status,
        "reason": reason,
    }


def observables_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["existing_score"] = frame["existing_score"].astype("Int64")
    return frame


def lookup_frame(provider: str, answers: dict[str, Lookup], entity_types: dict[str, str]):
    """The `<provider>_lookups` table for the given stix_id -> Lookup answers."""
    rows = []
    for stix_id, answer in answers.items():
        rows.append({
            "stix_id": stix_id,
            "entity_type": entity_types[stix_id],
            "normalized_value": "v",
            "provider": provider,
            "status": answer.status,
            "reason": answer.reason,
            "fields": json.dumps(answer.fields),
            "fetched_at": FETCHED_AT,
            "raw_digest": digest_of(provider, stix_id, answer.fields)
            if answer.status == "ok" else None,
            "from_cache": False,
            "latency_ms": 1.0,
            "http_status": 200,
            "message": None,
        })
    return pd.DataFrame(rows)


def merged_rows(specs: list[tuple[dict, dict[str, Lookup]]]) -> pd.DataFrame:
    """Merged frame from (observable row, {provider: Lookup}) pairs."""
    observables = observables_frame([obs for obs, _ in specs])
    types = dict(zip(observables["stix_id"], observables["entity_type"], strict=True))
    providers = sorted({p for _, answers in specs for p in answers})
    lookups = {
        provider: lookup_frame(
            provider,
            {obs["stix_id"]: answers[provider] for obs, answers in specs if provider in answers},
            types,
        )
        for provider in providers
    }
    return merge_lookups(observables, lookups)


def merged_one(answers: dict[str, Lookup], entity_type: str = "IPv4-Addr", **obs) -> pd.DataFrame:
    """A one-row merged frame: one observable with the given provider answers."""
    return merged_rows([(observable(0, entity_type, **obs), answers)])


def in_scope(provider: str, entity_type: str) -> bool:
    return entity_type in PROVIDER_SCOPE[provider]
