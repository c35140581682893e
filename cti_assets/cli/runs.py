"""Runs from the terminal: the definitions, the Dagster instance, in-process materialisation and
the provider pools. The demo, dev and enrich commands share these."""

from __future__ import annotations

import os
from pathlib import Path

POOL_LIMITS = {
    "virustotal": 1,
    "securitytrails": 1,
    "shodan": 1,
    "shodan_internetdb": 2,
    "greynoise": 2,
    "abuseipdb": 2,
    "opencti": 1,
}


def load_defs():
    """The definitions, built after the environment is set (resources bind env vars)."""
    from cti_assets.definitions import build_defs

    return build_defs()


INSTANCE_LOCK = ".cti-assets-instance.lock"
CORRUPTION_SIGNS = ("more than one head", "multiple heads")


def dagster_instance():
    """The instance in $DAGSTER_HOME (an ephemeral one without it), its storage created once:
    the first use is under a file lock, so simultaneous first runs never both initialise the
    SQLite databases (which left two alembic heads for good)."""
    import dagster as dg
    from filelock import FileLock

    from cti_assets.cli.errors import CliError

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    Path(home).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(home) / INSTANCE_LOCK), timeout=300):
        try:
            instance = dg.DagsterInstance.get()
            # touch every storage so each database is created and stamped here, under the lock
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            if instance.schedule_storage is not None:
                instance.schedule_storage.all_instigator_state()
        except Exception as error:
            if any(sign in str(error) for sign in CORRUPTION_SIGNS):
                raise CliError(
                    f"the Dagster instance in {home} is corrupted (its storage has two alembic "
                    "versions, left by two first runs at once). Stop every dagster process, move "
                    f"{home}/storage and {home}/schedules aside (run history is lost, outputs "
                    "are not) and run again: the instance is recreated cleanly."
                ) from None
            raise
    return instance


def materialise(partition_keys, run_config: dict | None = None, job_name: str = "enrichment"):
    """Run the job for each partition in process; print one line per asset as a progress log."""
    import dagster as dg

    defs = load_defs()
    job = defs.resolve_job_def(job_name)
    instance = dagster_instance()
    failed = []
    for key in partition_keys:
        print(f"\n== {job_name} {key}")
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        result = job.execute_in_process(
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            run_config={**quiet, **(run_config or {})},
        )
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            meta = {k: v.value for k, v in mat.metadata.items()}
            detail = ", ".join(
                f"{name}={meta[name]}"
                for name in ("rows", "calls", "cache_hits", "objects", "created", "updated")
                if name in meta
            )
            print(f"  ok  {mat.asset_key.to_user_string():<28} {detail}")
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                print(
                    f"  FAILED {event.step_key}: {event.event_specific_data.error.message.strip()}"
                )
        if not result.success:
            failed.append(key)
    return failed


def set_pool_limits(limits: dict[str, int] | None = None) -> dict[str, int]:
    """Give each provider pool its limit on the instance (a fresh instance has none)."""
    instance = dagster_instance()
    limits = limits or POOL_LIMITS
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits
