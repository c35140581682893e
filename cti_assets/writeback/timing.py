"""When the evidence behind a score was gathered: the clock of every write-back timestamp.

A note's `created` and an indicator's `valid_from` are the scoring time, taken from the data
(the newest `fetched_at` of the observable's provider lookups), never from now(): the same
lookups give the same bundle, byte for byte, and a rerun is a pure upsert. A rerun whose
lookups were fetched again (a forced refresh, or cache TTLs that ran out) moves the scoring
time, so the indicator's window `[valid_from, valid_from + lifetime)` moves with the evidence.

How this meets the platform's indicator lifetime rules (opencti-graphql
modules/indicator/indicator-domain.ts, indicator-utils.ts):
- an indicator whose valid_until is already past is created revoked, so the bundle leaves out
  every indicator whose window has closed at write time (`build_bundle(written_at=...)`);
- the decay manager (on by default) may replace valid_until with its decay rule's revoke date,
  computed from valid_from; since a rerun with fresh evidence moves valid_from, the decay rule
  restarts from the new evidence either way. Our lifetimes (hours to weeks per type) are the
  window we vouch for; the platform's decay may end an indicator earlier or later.
An observable with no provider answer falls back to its own creation time.
"""

from __future__ import annotations

import pandas as pd

from cti_assets.providers.base import ALL_PROVIDERS

FETCHED_AT_COLUMNS = tuple(f"{provider}__fetched_at" for provider in ALL_PROVIDERS)


def scored_at(merged: pd.DataFrame | None) -> dict[str, pd.Timestamp]:
    """stix_id -> the newest fetched_at of its lookups (observables with none are left out).

    `merged` needs `stix_id` and any of FETCHED_AT_COLUMNS (missing providers are skipped)."""
    if merged is None or merged.empty or "stix_id" not in merged.columns:
        return {}
    present = [column for column in FETCHED_AT_COLUMNS if column in merged.columns]
    if not present:
        return {}
    times = merged[present].apply(lambda column: pd.to_datetime(column, utc=True))
    newest = times.max(axis=1, skipna=True)
    return {str(stix_id): moment for stix_id, moment in zip(merged["stix_id"], newest,
                                                             strict=True)
            if not pd.isna(moment)}
