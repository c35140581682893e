"""The code location `cti_assets`: every asset, check, job, schedule and sensor under defs/,
loaded the dg way, plus the resources and the executor this deployment asks for.

`dg.load_from_defs_folder` finds every definition in the modules of `cti_assets/defs/` (the
`[tool.dg.project]` layout of pyproject.toml), so a new asset module needs no edit here.
`build_defs()` binds resources and the executor to the environment as it is when called, so the
CLI builds fresh definitions after it points providers somewhere (no module reloading); `defs`
is what `dagster dev`, `dg` and the code server load.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cti_assets import settings
from cti_assets.defs.resources import all_resources


def run_executor() -> dg.ExecutorDefinition:
    """Dagster's multiprocess-or-in-process executor, defaulting to this deployment's choice:
    CTI_EXECUTOR (multiprocess, CTI_MAX_CONCURRENT_STEPS steps at once, or in_process). A run
    may still ask for the other with `execution: {config: {in_process: true|false}}`, as the
    sensor does for a small day (one process: no step start-up)."""
    in_process = settings.executor() == "in_process"
    steps = settings.max_concurrent_steps()

    def choose(config: dict) -> dict:
        if config.get("in_process", in_process):
            return {"in_process": {}}
        return {"multiprocess": {"max_concurrent": int(config.get("max_concurrent", steps))}}

    return dg.multi_or_in_process_executor.configured(
        choose,
        name="cti_executor",
        config_schema={
            "in_process": dg.Field(
                bool, is_required=False,
                description=f"one process, steps in turn (default {in_process})"),
            "max_concurrent": dg.Field(int, is_required=False,
                                       description=f"steps at once when multiprocess ({steps})"),
        },
    )


def build_defs() -> dg.Definitions:
    found = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(
        found, dg.Definitions(resources=all_resources(), executor=run_executor()))


defs = build_defs()
