"""The code location `cti_assets`: every asset, check, job, schedule, sensor and resource.

`build_defs()` binds resources to the environment as it is when called, so the CLI builds fresh
definitions after it points providers somewhere (no module reloading); `defs` is what
`dagster dev` and the code server load.
"""

from __future__ import annotations

import dagster as dg

from cti_assets.defs import automation, ingest, lookups, scoring, writeback
from cti_assets.defs.resources import all_resources


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            ingest.observables,
            lookups.network_context_lookups,
            *lookups.cheap_lookup_assets,
            lookups.lookup_triage,
            *lookups.expensive_lookup_assets,
            scoring.merged_enrichment,
            scoring.threat_context,
            scoring.observable_scores,
            writeback.opencti_writeback,
        ],
        jobs=[automation.enrichment_job, automation.rescore_job],
        schedules=[automation.daily_schedule, automation.weekly_reenrichment_schedule],
        sensors=[automation.new_observables_sensor],
        resources=all_resources(),
        executor=dg.multiprocess_executor.configured({"max_concurrent": 4}),
    )


defs = build_defs()
