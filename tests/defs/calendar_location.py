"""A code location for tests that run the daemon's backfill loop in process: the definitions
are built when the workspace loads (after the test has pointed providers at the sandbox), with
the in-process executor so a run needs no step subprocesses."""

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    from cti_assets.definitions import build_defs

    built = build_defs()
    return dg.Definitions(
        assets=built.assets,
        jobs=built.jobs,
        sensors=built.sensors,
        resources=built.resources,
        executor=dg.in_process_executor,
    )
