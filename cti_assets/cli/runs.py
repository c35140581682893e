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


def dagster_instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


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
