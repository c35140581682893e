"""The benchmark's synthetic, deterministic, public-looking observables and its quotas.

Values are derived from their index only (no randomness), avoid every special-use range and
name (those are never sent), and mix the six entity types in a fixed proportion, so the number
of calls each provider must make is known before a run.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd

from cti_assets.intake.observables import observables_frame
from cti_assets.providers import base
from cti_assets.providers.config import DEFAULTS, ProviderSettings
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.sources.base import ObservableRecord

API_PROVIDERS = (
    base.INTERNETDB, base.GREYNOISE, base.ABUSEIPDB,
    base.VIRUSTOTAL, base.SECURITYTRAILS, base.SHODAN,
)  # fmt: skip
PLACEHOLDER_KEY = "bench-placeholder-key"  # the sandbox accepts any key
# Requests per second each provider allows in the benchmark: paid-tier-like, chosen so every
# provider needs about the same time for the default mix (about 10 s per 1,000 observables).
DEFAULT_RATE_LIMITS: dict[str, float] = {
    base.VIRUSTOTAL: 100.0,
    base.SHODAN: 50.0,
    base.INTERNETDB: 50.0,
    base.ABUSEIPDB: 50.0,
    base.GREYNOISE: 50.0,
    base.SECURITYTRAILS: 20.0,
}
# Share of each entity type in the workload (out of 20 consecutive indexes).
MIX: tuple[tuple[str, int], ...] = (
    ("IPv4-Addr", 10),
    ("IPv6-Addr", 1),
    ("Domain-Name", 4),
    ("Url", 2),
    ("StixFile", 3),
)
_CYCLE = [entity_type for entity_type, share in MIX for _ in range(share)]
BENCH_DAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_IPV4_BASE = int(ipaddress.IPv4Address("45.0.0.0"))
_IPV6_BASE = int(ipaddress.IPv6Address("2a05:d000::"))
_WORDS = ("north", "cobalt", "river", "amber", "lumen", "harbor", "vertex", "quill")


def entity_type_of(index: int) -> str:
    return _CYCLE[index % len(_CYCLE)]


def domain_of(index: int) -> str:
    word = _WORDS[index % len(_WORDS)]
    return f"{word}-{index:07d}-cdn.com"


def value_of(index: int) -> str:
    """The observable with this index: its value depends on nothing else."""
    entity_type = entity_type_of(index)
    if entity_type == "IPv4-Addr":
        return str(ipaddress.IPv4Address(_IPV4_BASE + 1 + index * 7 % (1 << 24)))
    if entity_type == "IPv6-Addr":
        return str(ipaddress.IPv6Address(_IPV6_BASE + (index << 16) + 1))
    if entity_type == "Domain-Name":
        return domain_of(index)
    if entity_type == "Url":
        return f"http://{domain_of(index)}/download/{index}/update.php"
    return hashlib.sha256(f"cti-assets-bench-{index}".encode()).hexdigest()


def stix_type_of(entity_type: str) -> str:
    return {"StixFile": "file"}.get(entity_type, entity_type.lower())


def records(indexes, created_at: datetime = BENCH_DAY) -> list[ObservableRecord]:
    """ObservableRecords of the given indexes, unmarked, created at `created_at`."""
    out = []
    for index in indexes:
        entity_type = entity_type_of(index)
        digest = hashlib.sha256(f"{entity_type}|{value_of(index)}".encode()).hexdigest()
        stix_id = f"{stix_type_of(entity_type)}--{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-" \
                  f"8{digest[17:20]}-{digest[20:32]}"
        out.append(ObservableRecord(
            internal_id=digest[:24], stix_id=stix_id, entity_type=entity_type,
            value=value_of(index), created_at=created_at,
        ))  # fmt: skip
    return out


def observables(n: int, start: int = 0) -> pd.DataFrame:
    """The `observables` table of indexes start..start+n-1 (TLP:CLEAR, all valid)."""
    return observables_frame(records(range(start, start + n)), unmarked_tlp="TLP:CLEAR")


def expected_calls(frame: pd.DataFrame, providers=API_PROVIDERS) -> dict[str, int]:
    """Distinct observables in each provider's scope: what one uncached run must send."""
    valid = frame[frame["status"] == "ok"]
    counts = {}
    for provider in providers:
        in_scope = valid[valid["entity_type"].isin(PROVIDER_SCOPE[provider])]
        counts[provider] = int(in_scope[["entity_type", "normalized_value"]]
                               .drop_duplicates().shape[0])  # fmt: skip
    return counts


def workers_for(rate: float, latency_ms: float) -> int:
    """Threads needed to keep `rate` requests per second in flight at `latency_ms`, with room
    for the client's own time per request."""
    return max(2, math.ceil(rate * (latency_ms / 1000.0 + 0.02) * 1.5) + 1)


def bench_settings(provider: str, base_urls: dict[str, str], rate: float,
                   latency_ms: float) -> ProviderSettings:
    """The provider's settings pointed at the sandbox: placeholder key, `rate` per second,
    no minute/day/month windows (the benchmark measures the per-second quota)."""
    from cti_assets.providers.config import URL_VARS

    return replace(
        DEFAULTS[provider], cache_ttl_s=dict(DEFAULTS[provider].cache_ttl_s),
        api_key=PLACEHOLDER_KEY, base_url=base_urls[URL_VARS[provider]], per_second=rate,
        per_minute=None, per_day=None, per_month=None,
        max_workers=workers_for(rate, latency_ms),
    )  # fmt: skip


def quota_bound_s(calls: dict[str, int], rates: dict[str, float]) -> float:
    """The least wall time the quotas allow: max over providers of calls / rate."""
    return max((calls[p] / rates[p] for p in calls if calls[p]), default=0.0)


def sco(index: int, salt: str = "") -> dict:
    """The STIX SCO of observable `index`; a `salt` gives the same value another id (the same
    IOC reported again as a new observable, e.g. by another feed on another day)."""
    entity_type = entity_type_of(index)
    stix_type = stix_type_of(entity_type)
    value = value_of(index)
    ident = uuid.uuid5(uuid.NAMESPACE_URL, f"cti-assets-bench|{stix_type}|{value}|{salt}")
    obj = {"type": stix_type, "spec_version": "2.1", "id": f"{stix_type}--{ident}"}
    if stix_type == "file":
        obj["hashes"] = {"SHA-256": value}
    else:
        obj["value"] = value
    return obj


def import_day(store, indexes, day: str, salt: str = "") -> int:
    """Import the observables of `indexes` as created on `day` at 09:00 UTC; how many new."""
    import json
    import tempfile
    from pathlib import Path

    from cti_assets.sources.bundle_files import bundle_of, import_bundles

    moment = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"bench-{day}.json"
        path.write_text(json.dumps(bundle_of([sco(i, salt) for i in indexes])))
        return import_bundles(store, [path], moment).created


def entity_types() -> list[str]:
    return [entity_type for entity_type, _ in MIX]
