"""`cti-assets explain VALUE`: a score's whole derivation, from the stored tables.

It reads what the pipeline stored (scores, each provider's lookup row, the cached raw answers),
so it costs no provider call and shows exactly what the score was computed from. It only reads:
a missing data directory is reported with its path, never created.
"""

from __future__ import annotations

import pandas as pd

from cti_assets.cli.errors import quoted
from cti_assets.providers.base import ALL_PROVIDERS
from cti_assets.storage.outputs import read_partition, stored_partitions


class NotScoredError(LookupError):
    """The value has no stored score."""


def wanted_keys(value: str) -> tuple[set[str], set[str]]:
    """(STIX ids, values) a stored score of `value` may carry: the text as given (a STIX id, or
    a value stored as is), the value normalised the way enrich reads it with the id enrich
    would give it (cti_assets.cli.enrich), and as a hostname (which enrich never creates, but a
    source may hold)."""
    from cti_assets.cli.enrich import UnknownValueError, guess_observable, typed_value
    from cti_assets.intake.observable import normalize

    text = value.strip()
    ids, values = {text}, {text}
    hostname = normalize("Hostname", text)
    if hostname.ok and hostname.value:
        values.add(hostname.value)
    try:
        _, normalized = typed_value(text)
        ids.add(guess_observable(text)["id"])
    except UnknownValueError:
        return ids, values
    if normalized.value:
        values.add(normalized.value)
    return ids, values


def _matches(frame: pd.DataFrame, value: str) -> pd.Series:
    ids, values = wanted_keys(value)
    mask = frame["stix_id"].isin(ids) | frame["normalized_value"].isin(values)
    if "value" in frame:
        mask |= frame["value"].isin(values)
    return mask.fillna(False)


def find_score(value: str, partition: str | None = None) -> tuple[str, dict]:
    """(partition, score row) of the latest partition holding the value."""
    partitions = (
        [partition] if partition else list(reversed(stored_partitions("observable_scores")))
    )
    if not partitions:
        raise NotScoredError(
            "no scores stored yet: run `make demo` or materialise observable_scores"
        )
    for key in partitions:
        try:
            scores = read_partition("observable_scores", key)
        except FileNotFoundError:
            continue
        as_read = _values_as_read(key, value)
        hits = scores[_matches(scores, value) | scores["stix_id"].isin(as_read)]
        if len(hits):
            row = hits.iloc[0].to_dict()
            if row["stix_id"] in as_read:
                row.setdefault("value", as_read[row["stix_id"]])
            return key, row
    where = f"partition {partition}" if partition else f"{len(partitions)} scored partition(s)"
    raise NotScoredError(f"{quoted(value)} is not in {where}")


def _values_as_read(partition: str, value: str) -> dict[str, str]:
    """{STIX id: value as the source gave it} of the day's observables given as `value`: a
    rejected observable has no normalised value, and its score row says why it was rejected."""
    try:
        observables = read_partition("observables", partition)
    except FileNotFoundError:
        return {}
    given = observables["value"].astype("string").str.strip()
    found = observables[(given == value.strip()).fillna(False)]
    return dict(zip(found["stix_id"].astype(str), found["value"].astype(str), strict=True))


def _row_of(asset: str, partition: str, stix_id: str, columns: dict[str, str]
            ) -> dict[str, object]:
    """Columns of the observable's row in another table of the day (renamed by `columns`),
    those with a value; nothing when the table or the row is not there."""
    try:
        table = read_partition(asset, partition)
    except FileNotFoundError:
        return {}
    hit = table[table["stix_id"] == stix_id]
    if hit.empty:
        return {}
    return {name: hit.iloc[0][column] for column, name in columns.items()
            if pd.notna(hit.iloc[0][column])}


def provider_rows(partition: str, stix_id: str) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for provider in ALL_PROVIDERS:
        try:
            lookups = read_partition(f"{provider}_lookups", partition)
        except FileNotFoundError:
            continue
        hit = lookups[lookups["stix_id"] == stix_id]
        if len(hit):
            rows[provider] = hit.iloc[0].to_dict()
    return rows


def searched_where() -> str:
    """The data directory explain reads, and where that came from."""
    import os

    from cti_assets import settings

    origin = "CTI_DATA_DIR" if os.environ.get("CTI_DATA_DIR") else "the default, ./data"
    return f"{settings.data_dir_path()} ({origin})"


def explain_value(value: str, partition: str | None = None, raw: bool = True) -> str:
    import os

    from cti_assets import settings
    from cti_assets.cli.errors import CliError
    from cti_assets.scoring.explain import explain_text

    try:
        settings.check_environment()
    except settings.SettingsError as error:
        raise CliError(str(error)) from None
    if not os.environ.get("CTI_OUTPUTS_BASE") and not settings.data_dir_path().is_dir():
        raise CliError(f"no data directory at {searched_where()}: nothing has been scored yet")
    try:
        key, row = find_score(value, partition)
    except NotScoredError as error:
        raise CliError(f"{error} (searched {searched_where()})") from None
    # what the write-back did, and why the TLP is what it is when not from the markings
    row.update(_row_of("opencti_writeback", key, row["stix_id"],
                       {"writeback_status": "writeback_status", "reason": "writeback_reason"}))
    row.update(_row_of("observables", key, row["stix_id"], {"tlp_reason": "tlp_reason"}))
    lookups = provider_rows(key, row["stix_id"])
    raw_bodies = stored_bodies(lookups) if raw else None
    shown = row["normalized_value"] if pd.notna(row["normalized_value"]) else row.get("value")
    header = f"partition {key} · {row['entity_type']} {shown} · {row['stix_id']}"
    return header + "\n" + explain_text(row, lookups, raw_bodies)


def stored_bodies(lookups: dict) -> dict[str, bytes] | None:
    """The raw answers behind the lookups, from the response cache in use (this host's SQLite
    file, or the shared PostgreSQL index and object store); None when there is no cache."""
    from cti_assets import settings
    from cti_assets.cli.errors import CliError
    from cti_assets.state.config import SQLITE, StateConfig
    from cti_assets.state.pg import StateBackendError

    state = StateConfig.from_env()
    if state.bodies_backend == SQLITE and not settings.cache_path().exists():
        return None
    try:
        cache = state.open_cache()
    except StateBackendError as error:
        raise CliError(str(error)) from None
    bodies: dict[str, bytes] = {}
    try:
        for lookup in lookups.values():
            digest = lookup.get("raw_digest")
            if isinstance(digest, str) and digest:
                body = cache.raw_body(digest)
                if body is not None:
                    bodies[digest] = body
    finally:
        cache.close()
    return bodies
