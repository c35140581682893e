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

# What a forkserver imports once before forking steps (settings.step_start_method): this module,
# so a step starts with Dagster, pandas and the definitions already loaded.
PRELOADED = __name__


class _EventShardsHeld(dg.Executor):
    """Dagster's executor, with the run's event-log databases held open while it executes when
    the instance stores events in SQLite (cti_assets/sqlite_hold.py: each event is then one
    commit, not a commit and a checkpoint). Another instance's storage is left alone."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
            INDEX_SHARD_NAME,
            SqliteEventLogStorage,
        )

        from cti_assets.sqlite_hold import hold_open

        storage = plan_context.instance.event_log_storage
        shards = ([storage.path_for_shard(plan_context.dagster_run.run_id),
                   storage.path_for_shard(INDEX_SHARD_NAME)]
                  if isinstance(storage, SqliteEventLogStorage) else [])
        with hold_open(shards):
            yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="multi_or_in_process_shards_held",
    config_schema=dg.multi_or_in_process_executor.config_schema.as_field(),
    requirements=lambda config: (dg.multiple_process_executor_requirements()
                                 if "multiprocess" in config else []),
)
def _shards_held_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    create = dg.multi_or_in_process_executor.executor_creation_fn
    assert create is not None
    return _EventShardsHeld(create(init_context))


def run_executor() -> dg.ExecutorDefinition:
    """Dagster's multiprocess-or-in-process executor, defaulting to this deployment's choice:
    CTI_EXECUTOR (multiprocess, CTI_MAX_CONCURRENT_STEPS steps at once, each started as
    CTI_STEP_START says, or in_process). A run may still ask for the other with
    `execution: {config: {in_process: true|false}}`, as the sensor does for a small day (one
    process: no step start-up). Either way the run's SQLite event-log databases, if the
    instance has them, are held open while it executes."""
    in_process = settings.executor() == "in_process"
    steps = settings.max_concurrent_steps()
    start_method = settings.step_start_method()

    def choose(config: dict) -> dict:
        if config.get("in_process", in_process):
            return {"in_process": {}}
        start: dict = {"spawn": {}}
        if start_method == "forkserver":
            start = {"forkserver": {"preload_modules": [PRELOADED]}}
        return {"multiprocess": {"max_concurrent": int(config.get("max_concurrent", steps)),
                                 "start_method": start}}

    return _shards_held_executor.configured(
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
