"""One "host" of the two-host test (tests/deploy/test_two_hosts.py), run as its own process: its
own CTI_DATA_DIR (store, SQLite files, Dagster instance), the shared state and outputs named by
the environment. Imports the sample when asked, runs a job for each day in process and writes a
JSON summary: success, failures, wall time, each lookup's calls and the state backends it used.

    python -m tests.deploy.two_host_worker --days D... [--import-days D...] [--job J]
        [--run-config JSON] --out FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", nargs="+", required=True)
    parser.add_argument("--import-days", nargs="*", default=[])
    parser.add_argument("--job", default="enrichment")
    parser.add_argument("--run-config", default="{}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import dagster as dg

    from cti_assets.cli import demo, runs

    if args.import_days:
        demo.import_sample(tuple(args.import_days))
    job = runs.load_defs().resolve_job_def(args.job)
    summary: dict[str, dict] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for day in args.days:
            started = time.monotonic()
            result = job.execute_in_process(partition_key=day, instance=instance,
                                            run_config=json.loads(args.run_config),
                                            raise_on_error=False)
            lookups = {}
            for event in result.get_asset_materialization_events():
                materialization = event.step_materialization_data.materialization
                metadata = materialization.metadata
                if "state_backends" in metadata:
                    lookups[materialization.asset_key.to_user_string()] = {
                        "calls": metadata["calls"].value,
                        "state_backends": metadata["state_backends"].value,
                    }
            summary[day] = {
                "success": result.success,
                "wall_s": round(time.monotonic() - started, 2),
                "failures": [e.event_specific_data.error.to_string() for e in result.all_events
                             if e.event_type == dg.DagsterEventType.STEP_FAILURE],
                "lookups": lookups,
            }
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
