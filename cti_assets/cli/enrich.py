"""On-demand enrichment: enrich given values now, with a forced refresh of just those values.

The values are imported into the local store when new (so they belong to today's partition),
then their day's pipeline runs with `refresh_values` set on every lookup asset: the given
values are fetched anew, the rest of the day comes from the cache at no cost.
"""

from __future__ import annotations

from datetime import UTC, datetime

import stix2

from cti_assets.intake.observable import normalize
from cti_assets.providers.base import ALL_PROVIDERS

_GUESS_ORDER = ("IPv4-Addr", "IPv6-Addr", "StixFile", "Url", "Domain-Name")


class UnknownValueError(ValueError):
    """A value that is no observable type we know."""


def guess_observable(value: str) -> dict:
    """The STIX SCO for a bare value, typed by the first type that accepts it."""
    text = value.strip()
    for entity_type in _GUESS_ORDER:
        if entity_type == "Url" and "://" not in text and "[:]//" not in text:
            continue
        result = normalize(entity_type, text)
        if not result.ok:
            continue
        if entity_type == "IPv4-Addr":
            sco = stix2.IPv4Address(value=result.value)
        elif entity_type == "IPv6-Addr":
            sco = stix2.IPv6Address(value=result.value)
        elif entity_type == "StixFile":
            sco = stix2.File(hashes={result.hash_type: result.value})
        elif entity_type == "Url":
            sco = stix2.URL(value=result.value)
        else:
            sco = stix2.DomainName(value=result.value)
        return dict(sco)
    raise UnknownValueError(
        f"{value!r} is not an IP address, domain, URL or MD5/SHA-1/SHA-256 hash"
    )


def run_config_refreshing(values: list[str]) -> dict:
    """Run config forcing a fresh lookup of the given values on every provider asset."""
    return {
        "ops": {
            f"{provider}_lookups": {"config": {"refresh_values": list(values)}}
            for provider in ALL_PROVIDERS
            if provider != "network_context"
        }
    }


def enrich_now(values: list[str]) -> int:
    from cti_assets.cli.errors import CliError
    from cti_assets.cli.runs import materialise
    from cti_assets.defs.partitions import partition_key_for
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    try:
        objects = [guess_observable(value) for value in values]
    except UnknownValueError as error:
        raise CliError(str(error)) from None
    store = LocalStixStore()
    now = datetime.now(UTC)
    store.write_bundle({"type": "bundle", "id": "bundle--ondemand", "objects": objects})
    ids = {obj["id"] for obj in objects}
    created = store.first_seen(sorted(ids))
    partitions = sorted({partition_key_for(created.get(sid, now)) for sid in ids})
    refresh = [obj["id"] for obj in objects]
    failed = materialise(partitions, run_config=run_config_refreshing(refresh))
    for key in partitions:
        scores = read_partition("observable_scores", key)
        for row in scores[scores["stix_id"].isin(ids)].itertuples():
            print(f"{row.normalized_value}: {row.explanation}")
    return 1 if failed else 0


def enrich_values(values: list[str], sandbox_port: int | None = None) -> int:
    """Import the values when needed, run their day's pipeline with a forced refresh of them,
    and print their scores."""
    sandbox = None
    if sandbox_port is not None:
        from cti_assets.cli.demo import point_providers_at
        from cti_assets.sandbox import ProviderSandbox

        sandbox = ProviderSandbox(port=sandbox_port).start()
        point_providers_at(sandbox.base_urls)
    try:
        return enrich_now(values)
    finally:
        if sandbox:
            sandbox.stop()
