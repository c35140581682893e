"""At most one run per day at a time, whatever launched it.

Dagster tags a run's partition in one of two forms: a sensor, schedule or launchpad run carries
`dagster/partition`, an asset backfill run carries `dagster/asset_partition_range_start` and
`..._end`. A tag concurrency limit counts one tag key, so limits over the two forms never see
each other: a backfill run and a sensor run of the same day would both start. This run
coordinator (the queued one, plus one step) copies either form into a single tag,
`cti/partition`, as the run enters the queue; dagster.yaml's run queue then limits that tag to one
run per unique value:

    run_coordinator:
      module: cti_assets.defs.run_guard
      class: PartitionGuardRunCoordinator
    concurrency:
      runs:
        tag_concurrency_limits:
          - {key: cti/partition, value: {applyLimitPerUniqueValue: true}, limit: 1}

The assets run one day per run (no backfill policy: one run per partition), so where a run
carries the range form its start and end are the same day. A run over several days gets its
range as the tag value ("start...end"): it waits for another run of the same range only.

Runs executed in the calling process (`dagster asset materialize`, `execute_in_process`) never
enter the queue, so no run-queue rule applies to them.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.run_coordinator import SubmitRunContext

PARTITION_TAG = "cti/partition"
_PARTITION = "dagster/partition"
_RANGE_START = "dagster/asset_partition_range_start"
_RANGE_END = "dagster/asset_partition_range_end"

# The instance's run-queue rule, as dagster.yaml writes it (and as tests check it).
PARTITION_LIMIT = {"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def partition_of(tags: Mapping[str, str]) -> str | None:
    """The day (or range of days) a run's tags say it materializes, in either tag form."""
    if tags.get(_PARTITION):
        return tags[_PARTITION]
    start, end = tags.get(_RANGE_START), tags.get(_RANGE_END)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


class PartitionGuardRunCoordinator(dg.QueuedRunCoordinator):
    """The queued run coordinator, tagging each run with the partition it materializes."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        partition = partition_of(run.tags)
        if partition is not None and run.tags.get(PARTITION_TAG) != partition:
            self._instance.add_run_tags(run.run_id, {PARTITION_TAG: partition})
            run = run.with_tags({**run.tags, PARTITION_TAG: partition})
            context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
