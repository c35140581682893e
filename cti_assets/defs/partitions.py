"""Daily partitions on the observable's creation date in the source, UTC.

The current day is included (end_offset=1) so that the sensor can enrich observables as they
arrive; CTI_PARTITIONS_START (settings.partitions_start) moves the first day.

Assets carry no backfill policy: without one, an asset backfill launches one run per day, which
is what the Parquet IO manager (one file per partition) needs and what keeps a provider outage
to one day's worth of retries. `BackfillPolicy.multi_run(max_partitions_per_run=1)` said the
same thing explicitly, at the cost of a BetaWarning per asset.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from cti_assets import settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=settings.partitions_start(), timezone="UTC", end_offset=1
)


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """The half-open UTC window [start, end) of a daily partition key."""
    window = daily_partitions.time_window_for_partition_key(partition_key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def partition_key_for(moment: datetime) -> str:
    """The daily partition an instant belongs to (UTC date)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")

