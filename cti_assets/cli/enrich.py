"""On-demand enrichment: enrich given values now, with a forced refresh of just those values.

The values are imported into the local store when new (so they belong to today's partition); a
value the store already holds, under any id, is enriched as it is there, markings included.
Then their day's pipeline runs with `refresh_values` set on every lookup asset: the given
values are fetched anew, the rest of the day comes from the cache at no cost.

Providers are reached through their settings (keys and base URLs from the environment), or,
with `--sandbox-port N`, through the provider sandbox on that port: the one already listening
there (a `cti-assets sandbox` or `make dev`), else one started for this command. With no
provider key set at all, enrich says so before it runs.

Settings and values are checked before anything starts or is written. Only scores stored by
this command's own run are printed: a day whose run failed gets one line naming the run, and a
value no provider answered about (every one asked failed, none had a key, or its TLP allows
none) gets one line; both make the exit status 1.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import stix2

from cti_assets.cli.errors import quoted
from cti_assets.intake.observable import Normalized, normalize
from cti_assets.refresh import run_config_refreshing

JOB = "enrichment"
_GUESS_ORDER = ("IPv4-Addr", "IPv6-Addr", "StixFile", "Url", "Domain-Name")


class UnknownValueError(ValueError):
    """A value that is no observable type we know."""


def typed_value(value: str) -> tuple[str, Normalized]:
    """(entity type, normalised value) of a bare value, typed by the first type that accepts
    it; UnknownValueError otherwise. enrich types what it imports with it, and explain finds a
    stored score with it, so both read a value the same way."""
    text = value.strip()
    reasons: dict[str, str] = {}
    for entity_type in _GUESS_ORDER:
        if entity_type == "Url" and "://" not in text and "[:]//" not in text:
            continue
        result = normalize(entity_type, text)
        if result.ok:
            return entity_type, result
        reasons[entity_type] = str(result.reason)
    if all(reason.startswith("too_long") for reason in reasons.values()):
        longest = reasons.get("Url") or reasons["Domain-Name"]  # the URL's limit is the largest
        raise UnknownValueError(f"{quoted(value)} is too long for any observable type: {longest}")
    raise UnknownValueError(
        f"{quoted(value)} is not an IP address, domain, URL or MD5/SHA-1/SHA-256 hash"
    )


def guess_observable(value: str) -> dict:
    """The STIX SCO for a bare value, typed by the first type that accepts it."""
    entity_type, result = typed_value(value)
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


def checked_observables(values: list[str]) -> list[dict]:
    """The SCOs of the values, once the environment and every value are known good; CliError
    (one line) otherwise. Called before anything starts or is written."""
    from cti_assets import settings
    from cti_assets.cli.errors import CliError

    try:
        settings.check_environment()
        return [guess_observable(value) for value in values]
    except (settings.SettingsError, UnknownValueError) as error:
        raise CliError(str(error)) from None


def no_key_notice() -> str | None:
    """What to say when no provider API key is set (None when one is): only the providers
    that need no key can answer."""
    from cti_assets.providers.base import PROVIDER_LABELS
    from cti_assets.providers.config import DEFAULTS, KEY_VARS, settings_from_env

    providers = {name: settings_from_env(name) for name in DEFAULTS}
    if any(provider.api_key for provider in providers.values()):
        return None
    keyless = [PROVIDER_LABELS.get(name, name) for name, s in providers.items() if not s.needs_key]
    keys = sorted({var for var in KEY_VARS.values() if var})
    return (f"no provider API key is set ({', '.join(keys)}): only {' and '.join(keyless)}, "
            "which need none, can be asked; set keys, or use --sandbox-port PORT to try the "
            "provider sandbox")


def enrich_now(values: list[str]) -> int:
    """Import the values, run their days and print their scores from this run only: a day
    whose run failed gets one line saying so and where to look (exit 1), as does a value no
    provider answered about."""
    from cti_assets import settings
    from cti_assets.cli.runs import dagster_instance, materialise
    from cti_assets.defs.partitions import partition_key_for
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    objects = checked_observables(values)
    notice = no_key_notice()
    if notice:
        print(notice)
    store = LocalStixStore()
    now = datetime.now(UTC)
    value_keys = [value_key(value) for value in values]
    held = store.copies_of(value_keys)
    # a value the store holds (under any id, with its markings) is enriched as it is there: a
    # new unmarked copy would let providers see a value another copy marks TLP:RED
    targets: dict[str, dict] = {}
    new = []
    for identity, obj in zip(value_keys, objects, strict=True):
        copies = held.get(identity, [])
        targets.update({copy.stix_id: obj for copy in copies} or {obj["id"]: obj})
        if not copies:
            new.append(obj)
    if new:
        store.write_bundle({"type": "bundle", "id": "bundle--ondemand", "objects": new})
    ids = set(targets)
    created = store.first_seen(sorted(ids))
    days = {sid: partition_key_for(created.get(sid, now)) for sid in ids}
    partitions = sorted(set(days.values()))
    failed = materialise(partitions, run_config=run_config_refreshing(sorted(ids)), job_name=JOB)
    instance = dagster_instance()
    status = 0
    for key in partitions:
        wanted = {sid for sid, day in days.items() if day == key}
        run_id = _run_of(instance, key, since=now)
        scores = None
        if key not in failed and run_id is not None:
            scores = read_partition("observable_scores", key)
            if _scores_run(instance, key) != run_id:  # another run of the day wrote them since
                scores = None
        if scores is None:
            what = "failed" if key in failed else "left no scores of its own"
            print(f"cti-assets enrich: the {JOB} run of {key} (run {run_id or 'not found'}) "
                  f"{what}: no score shown for {', '.join(_values_of(targets, wanted))}; see "
                  f"the FAILED steps above, or the run in the Dagster UI (`cti-assets dev`, "
                  f"Dagster home {settings.dagster_home_path()})", file=sys.stderr)
            status = 1
            continue
        mine = scores[scores["stix_id"].isin(wanted)]
        copies = mine["normalized_value"].value_counts()
        for row in mine.itertuples():  # a value the store holds under several ids: each named
            named = f" ({row.stix_id})" if copies.get(row.normalized_value, 0) > 1 else ""
            print(f"{row.normalized_value}{named}: {row.explanation}")
        for value, why in unanswered(key, mine, keys_set=notice is None).items():
            print(f"cti-assets enrich: no provider answered for {value}: {why}", file=sys.stderr)
            status = 1
    return status


def _values_of(targets: dict[str, dict], ids: set[str]) -> list[str]:
    """The values asked for, of the observables whose ids are given (a file by its hash)."""
    shown = [obj.get("value") or next(iter(obj.get("hashes", {}).values()), obj["id"])
             for stix_id, obj in sorted(targets.items()) if stix_id in ids]
    return list(dict.fromkeys(shown))


def value_key(value: str) -> tuple[str, str]:
    """The identity key of a checked value, as the store indexes observables (a name under
    either type it may be stored as)."""
    from cti_assets.intake.observables import identity_keys

    entity_type, normalized = typed_value(value)
    [key] = identity_keys(entity_type, [normalized.value])
    return key


def _run_of(instance, key: str, since: datetime) -> str | None:
    """The id of the latest run of the enrichment job for day `key` created since `since`:
    the one this command just ran."""
    import dagster as dg

    runs = instance.get_runs(
        dg.RunsFilter(job_name=JOB, tags={"dagster/partition": key}, created_after=since),
        limit=1)
    return runs[0].run_id if runs else None


def _scores_run(instance, key: str) -> str | None:
    """The id of the run that last materialised observable_scores for day `key`."""
    import dagster as dg

    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("observable_scores"),
                              asset_partitions=[key]), limit=1)
    return result.records[0].run_id if result.records else None


def unanswered(key: str, scores, keys_set: bool) -> dict[str, str]:
    """value -> why, for the scored rows no provider answered about in day `key`'s run
    (scoring.evidence decides): every provider asked failed, or none could be asked."""
    from cti_assets.providers.base import SKIP_NO_KEY, SKIP_TLP
    from cti_assets.scoring.evidence import FAILED, NOT_ASKED, evidence_states, status_columns
    from cti_assets.storage.outputs import open_table, partition_path

    if scores.empty:
        return {}
    columns = ["stix_id", *status_columns()]
    merged = open_table(partition_path("merged_enrichment", key), columns).read()
    merged = merged[merged["stix_id"].isin(set(scores["stix_id"]))].reset_index(drop=True)
    states = dict(zip(merged["stix_id"], evidence_states(merged), strict=True))
    why: dict[str, str] = {}
    for row in scores.itertuples():
        state = states.get(row.stix_id)
        if state == FAILED:
            why[row.normalized_value] = (
                "every provider asked about it failed (their statuses are on its line); "
                "enrich it again when they recover")
        elif state == NOT_ASKED:
            rows = merged[merged["stix_id"] == row.stix_id]
            if not keys_set and _skipped_for(rows, SKIP_NO_KEY):
                why[row.normalized_value] = (
                    "none of the providers that look it up has an API key set; set keys, or "
                    "use --sandbox-port PORT")
            elif _skipped_for(rows, SKIP_TLP):
                why[row.normalized_value] = (
                    f"its TLP ({row.tlp}) is above what the providers that look it up may see "
                    "(<PROVIDER>_MAX_TLP): nothing was sent, and no score was written back")
    return why


def _skipped_for(rows, skip_reason: str) -> bool:
    """Whether a provider skipped the merged row(s) for `skip_reason` (no_key, tlp)."""
    from cti_assets.providers.base import SKIPPED
    from cti_assets.providers.fields import column
    from cti_assets.scoring.evidence import EVIDENCE_PROVIDERS

    for provider in EVIDENCE_PROVIDERS:
        status, reason = column(provider, "status"), column(provider, "reason")
        if status in rows and reason in rows:
            hit = (rows[status].astype("string").fillna("") == SKIPPED) & (
                rows[reason].astype("string").fillna("") == skip_reason)
            if hit.any():
                return True
    return False


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

    checked_observables(values)  # refuse a bad setting or value before anything starts
    sandbox = None
    if sandbox_port is not None:
        from cti_assets.cli.demo import point_providers_at, refuse_sandbox_with_opencti
        from cti_assets.sandbox import ProviderSandbox

        refuse_sandbox_with_opencti()  # before a sandbox is started or found

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
