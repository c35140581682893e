"""On-demand enrichment: enrich given values now, with a forced refresh of just those values.

The values are imported into the local store when new (so they belong to today's partition),
then their day's pipeline runs with `refresh_values` set on every lookup asset: the given
values are fetched anew, the rest of the day comes from the cache at no cost.

Providers are reached through their settings (keys and base URLs from the environment), or,
with `--sandbox-port N`, through the provider sandbox on that port: the one already listening
there (a `cti-assets sandbox` or `make dev`), else one started for this command.
"""

from __future__ import annotations

from datetime import UTC, datetime

import stix2

from cti_assets.intake.observable import normalize
from cti_assets.refresh import run_config_refreshing

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


def running_sandbox_urls(port: int, host: str = "127.0.0.1") -> dict[str, str] | None:
    """The base URLs of a provider sandbox already answering on the port, or None when what
    answers there (if anything) is no sandbox."""
    import requests

    from cti_assets.sandbox import BASE_URL_PATHS

    url = f"http://{host}:{port}"
    try:
        reply = requests.get(f"{url}/_sandbox/stats", timeout=3)
        stats = reply.json() if reply.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(stats, dict) or not {"total", "providers"} <= stats.keys():
        return None
    return {name: f"{url}{path}" for name, path in BASE_URL_PATHS.items()}


def enrich_values(values: list[str], sandbox_port: int | None = None) -> int:
    """Import the values when needed, run their day's pipeline with a forced refresh of them,
    and print their scores."""
    from cti_assets.cli.errors import CliError

    for value in values:  # refuse a bad value before anything starts or is written
        try:
            guess_observable(value)
        except UnknownValueError as error:
            raise CliError(str(error)) from None
    sandbox = None
    if sandbox_port is not None:
        from cti_assets.cli.demo import point_providers_at
        from cti_assets.sandbox import ProviderSandbox

        base_urls = running_sandbox_urls(sandbox_port) if sandbox_port else None
        if base_urls is None:
            try:
                sandbox = ProviderSandbox(port=sandbox_port).start()
            except OSError:
                raise CliError(
                    f"port {sandbox_port} is in use by something that is not the provider "
                    "sandbox; give another --sandbox-port"
                ) from None
            base_urls = sandbox.base_urls
            print(f"provider sandbox started on {sandbox.url}")
        else:
            print(f"using the provider sandbox already running on port {sandbox_port}")
        point_providers_at(base_urls)
    try:
        return enrich_now(values)
    finally:
        if sandbox:
            sandbox.stop()
