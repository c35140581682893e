"""The project's code location with the in-process executor, for the connector's end-to-end
tests: the same assets, jobs and resources, one process per run instead of one per step (a step
process takes tens of seconds to start on a loaded 2-core test machine). The connector's path
(launch through GraphQL, tags, run config, status, reporting) does not depend on the executor."""

from __future__ import annotations

import dagster as dg

from cti_assets.definitions import build_defs


def _in_process() -> dg.Definitions:
    project = build_defs()
    return dg.Definitions(
        assets=project.assets,
        jobs=project.jobs,
        schedules=project.schedules,
        sensors=project.sensors,
        resources=project.resources,
        executor=dg.in_process_executor,
    )


defs = _in_process()
