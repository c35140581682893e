"""Jobs, schedules and the new-observables sensor.

Everything that starts a run lives here, and it only ever asks Dagster for runs: scaling out is
Dagster's run queue, pools and launchers, never a scheduler of our own. Sensor runs carry a
higher priority than backfills so that fresh observables go first.

Write-back follows a rescore because the `rescore` job includes it, rather than through an
AutomationCondition: the job needs no daemon sensor switched on, a rescore backfill of past days
writes each of those days (`eager()` only acts on the latest time partition), and the run that
changed the scores is the run that shows whether they reached OpenCTI.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from cti_assets import settings
from cti_assets.defs.partitions import daily_partitions, partition_key_for
from cti_assets.defs.resources import SourceResource
from cti_assets.sources.base import SourceError

SENSOR_PRIORITY = "10"
BACKFILL_PRIORITY = "-10"
# Run config of a sensor run over few observables: one process, no step start-up (the
# executor is definitions.run_executor).
IN_PROCESS_RUN = {"execution": {"config": {"in_process": True}}}

enrichment_job = dg.define_asset_job(
    "enrichment",
    selection=dg.AssetSelection.all(),
    description="The whole graph for a day: observables, lookups, scores and write-back.",
)

# Re-scoring ends with the write-back: a score that changed reaches OpenCTI in the same run
# (see RESCORE_ASSETS).
RESCORE_ASSETS = ("merged_enrichment", "observable_scores", "opencti_writeback")

rescore_job = dg.define_asset_job(
    "rescore",
    selection=dg.AssetSelection.assets(*RESCORE_ASSETS),
    description="Re-score days from the stored lookups, with zero provider calls (after a "
    "change of weights or of the scoring model, say), and write the new scores back.",
)

daily_schedule = dg.build_schedule_from_partitioned_job(
    enrichment_job, hour_of_day=0, minute_of_hour=30, name="daily_enrichment_schedule"
)


@dg.schedule(
    cron_schedule="0 3 * * 0",
    job=enrichment_job,
    execution_timezone="UTC",
    name="weekly_reenrichment_schedule",
)
def weekly_reenrichment_schedule(context: dg.ScheduleEvaluationContext):
    """Re-enrich the last CTI_REENRICH_DAYS days; the providers' TTLs decide what is fetched."""
    tick = context.scheduled_execution_time.astimezone(UTC)
    valid = set(daily_partitions.get_partition_keys(current_time=tick))
    for days_back in range(1, settings.reenrich_days() + 1):
        key = partition_key_for(tick - timedelta(days=days_back))
        if key in valid:
            yield dg.RunRequest(
                run_key=f"reenrich:{tick.date().isoformat()}:{key}",
                partition_key=key,
                tags={"dagster/priority": BACKFILL_PRIORITY, "cti/trigger": "weekly"},
            )


@dataclass(frozen=True)
class Watermark:
    """The sensor cursor: the last (created_at, stix_id) seen, and short digests of the ids seen
    within the look-back window behind it (so a late arrival there is new, the rest are not)."""

    created_at: datetime | None = None
    stix_id: str | None = None
    recent: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, cursor: str | None) -> "Watermark":
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(datetime.fromisoformat(data["created_at"]), data["id"],
                   frozenset(data.get("recent", ())))

    def to_cursor(self) -> str:
        assert self.created_at is not None
        return json.dumps(
            {"created_at": self.created_at.astimezone(UTC).isoformat(), "id": self.stix_id,
             "recent": sorted(self.recent)},
            sort_keys=True,
        )


def id_digest(stix_id: str) -> str:
    """12 hex characters of the id's SHA-256: enough to tell a window's ids apart, small."""
    return hashlib.sha256(stix_id.encode()).hexdigest()[:12]


def plan_sensor_tick(
    cursor: str | None,
    new_items: list[tuple[datetime, str]],
    current_time: datetime,
    behind: list[tuple[datetime, str]] | None = None,
    lookback: timedelta = timedelta(0),
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """Run requests, next cursor and skip reason for the observables new since the cursor.

    `new_items` come after the watermark; `behind` are those of the look-back window behind it,
    of which the ones whose ids the cursor does not remember arrived late and are new too.
    One dated after `current_time` (a source clock ahead of ours, a wrong import) waits for its
    time: taken now, it would carry the watermark past everything created until then."""
    previous = Watermark.parse(cursor)
    late = [item for item in behind or [] if id_digest(item[1]) not in previous.recent]
    arrived = set(new_items) | set(late)
    fresh = sorted(item for item in arrived if item[0] <= current_time)
    ahead = sorted(item for item in arrived if item[0] > current_time)
    if not fresh:
        if ahead:
            return [], cursor, (
                f"{len(ahead)} observable(s) dated after now (the first "
                f"{ahead[0][0].astimezone(UTC).isoformat()}, {ahead[0][1]}): taken once their "
                "time has come")
        return [], cursor, "no observables created since the last tick"
    last_created, last_id = max([*fresh, *([(previous.created_at, previous.stix_id)]
                                          if previous.created_at else [])])
    window_start = last_created - lookback
    remembered = {id_digest(i) for t, i in [*(behind or []), *fresh] if t >= window_start}
    watermark = Watermark(last_created, last_id, frozenset(remembered))
    valid = set(daily_partitions.get_partition_keys(current_time=current_time))
    affected: dict[str, int] = {}
    late_by_day: dict[str, list[str]] = {}
    for created_at, _ in fresh:
        key = partition_key_for(created_at)
        affected[key] = affected.get(key, 0) + 1
    for created_at, stix_id in late:
        late_by_day.setdefault(partition_key_for(created_at), []).append(stix_id)
    small = settings.sensor_in_process_max()
    requests = [
        dg.RunRequest(
            run_key=_run_key(key, watermark, late_by_day.get(key, [])),
            partition_key=key,
            run_config=IN_PROCESS_RUN if count <= small else {},
            tags={
                "dagster/priority": SENSOR_PRIORITY,
                "cti/trigger": "sensor",
                "cti/new_observables": str(count),
                "cti/late_observables": str(len(late_by_day.get(key, []))),
            },
        )
        for key, count in sorted(affected.items())
        if key in valid
    ]
    outside = sorted(k for k in affected if k not in valid)
    skip = f"observables on days outside the partitions: {', '.join(outside)}" if outside else None
    if not requests and skip is None:
        skip = "no partition affected"
    return requests, watermark.to_cursor(), skip if not requests else None


def _run_key(key: str, watermark: Watermark, late_ids: list[str]) -> str:
    assert watermark.created_at is not None
    run_key = f"{key}:{watermark.created_at.isoformat()}:{watermark.stix_id}"
    if late_ids:  # a late arrival behind an unchanged watermark still gets its own run
        run_key += ":late:" + id_digest(",".join(sorted(late_ids)))
    return run_key


@dg.sensor(
    job=enrichment_job,
    minimum_interval_seconds=settings.sensor_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING
    if settings.sensor_default_on()
    else dg.DefaultSensorStatus.STOPPED,
)
def new_observables_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    """Start a run for each day that received observables since the cursor, or late ones
    within the look-back window behind it (CTI_SENSOR_LOOKBACK_S)."""
    cursor = context.cursor
    watermark = Watermark.parse(cursor)
    lookback = timedelta(seconds=settings.sensor_lookback_s())
    limit = settings.sensor_batch_limit()
    now = datetime.now(UTC)
    if watermark.created_at is not None and watermark.created_at > now:
        # carried past now by a future-dated observable before plan_sensor_tick held those
        # back: read again from the look-back window before now
        context.log.warning(f"sensor cursor at {watermark.created_at.isoformat()}, after now: "
                            f"reading again from {(now - lookback).isoformat()}")
        watermark = Watermark(now - lookback, "", frozenset())
        cursor = watermark.to_cursor()
    try:
        cti_source = source.get()
        new_items = cti_source.created_since(watermark.created_at, watermark.stix_id, limit)
        behind = []
        if watermark.created_at is not None and lookback:
            window = cti_source.created_since(watermark.created_at - lookback, None, limit)
            behind = [(t, i) for t, i in window if (t, i) <= (watermark.created_at,
                                                             watermark.stix_id or "")]
    except SourceError as error:
        return dg.SkipReason(f"source unavailable: {error}")
    requests, next_cursor, skip = plan_sensor_tick(cursor, new_items, now, behind, lookback)
    return dg.SensorResult(run_requests=requests, cursor=next_cursor, skip_reason=skip)
