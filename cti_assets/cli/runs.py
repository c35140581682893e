"""Runs from the terminal: the definitions, the Dagster instance, in-process materialisation and
the provider pools. The demo, dev and enrich commands share these.

Every run goes to the one Dagster home settings resolves (DAGSTER_HOME, default
<data dir>/dagster_home), created with the project's dagster.yaml when missing, so a bare
`cti-assets enrich` shows up in `make dev`'s UI and `pools` sets the limits the daemon reads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import cti_assets
from cti_assets import settings
from cti_assets.cli.errors import CliError, readable_line
from cti_assets.providers.http import redact


class ErrorInfo(Protocol):
    """What a step failure event records of its error (Dagster's SerializableErrorInfo)."""

    message: str
    cls_name: str | None
    cause: ErrorInfo | None

# The instance settings of the project (run queue, pool default, retries), beside the package.
PROJECT_DAGSTER_YAML = Path(cti_assets.__file__).resolve().parent.parent / "dagster.yaml"

def _pool_limits() -> dict[str, int]:
    from cti_assets.providers.config import DEFAULTS

    return {provider: settings.pool_limit for provider, settings in DEFAULTS.items()} | {
        "opencti": 1}


POOL_LIMITS = _pool_limits()  # one pool per provider (its settings' pool_limit), and OpenCTI


def load_defs():
    """The definitions, built after the environment is set (resources bind env vars)."""
    from cti_assets.definitions import build_defs

    return build_defs()


INSTANCE_LOCK = ".cti-assets-instance.lock"
CORRUPTION_SIGNS = ("more than one head", "multiple heads")


def ensure_dagster_home() -> Path:
    """The Dagster home, created with the project's dagster.yaml when missing."""
    home = settings.dagster_home_path()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and PROJECT_DAGSTER_YAML.is_file():
        shutil.copyfile(PROJECT_DAGSTER_YAML, config)
    return home


def dagster_env() -> dict[str, str]:
    """The environment of a Dagster process started from here: the same data directory and
    Dagster home as this one, spelled out (absolute), whatever its working directory."""
    home = ensure_dagster_home()
    return {**os.environ, "CTI_DATA_DIR": str(settings.data_dir_path()), "DAGSTER_HOME": str(home)}


def dagster_instance():
    """The project's persistent Dagster instance (see ensure_dagster_home), its storage created
    once: the first use is under a file lock, so simultaneous first runs never both initialise
    the SQLite databases (which left two alembic heads for good). DagsterInstance.get reads
    DAGSTER_HOME; it is set for that call only, so nothing else in the process moves."""
    import dagster as dg
    from filelock import FileLock

    from cti_assets.cli.errors import CliError

    home = str(ensure_dagster_home())
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = home
    try:
        with FileLock(str(Path(home) / INSTANCE_LOCK), timeout=300):
            instance = dg.DagsterInstance.get()
            # touch every storage so each database is created and stamped here, under the lock
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            if instance.schedule_storage is not None:
                instance.schedule_storage.all_instigator_state()
        reap_dead_runs(instance)
    except Exception as error:
        if any(sign in str(error) for sign in CORRUPTION_SIGNS):
            raise CliError(
                f"the Dagster instance in {home} is corrupted (its storage has two alembic "
                "versions, left by two first runs at once). Stop every dagster process, move "
                f"{home}/storage and {home}/schedules aside (run history is lost, outputs "
                "are not) and run again: the instance is recreated cleanly."
            ) from None
        raise
    finally:
        if saved is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = saved
    return instance


def reap_dead_runs(instance) -> list[str]:
    """Mark failed the runs of this (SQLite, so local) instance still STARTED whose run process
    is gone, and free their pool slots; their ids.

    Nothing else does it for a run started from a terminal (`dagster asset materialize`, a cron
    job) and then killed: no code server watches its process and the default run launcher has
    no health check, so it stays STARTED and keeps its pool slots for good, and every later run
    waits "blocked by limit for pool". The run process is the one that logged the run's first
    engine event with a pid (the executor's or the run worker's); it is gone when no process
    has that pid or the one that has it started after the event (the pid was reused). Runs of a
    Postgres instance may run on other hosts, whose pids mean nothing here: left to the daemon's
    run monitoring (see docs/reliability.md)."""
    import dagster as dg

    if "sqlite" not in type(instance.run_storage).__name__.lower():
        return []
    reaped = []
    started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in started:
        run = record.dagster_run
        owner = _run_process(instance, run.run_id)
        if owner is None or _alive(*owner):
            continue
        pid = owner[0]
        instance.report_run_failed(
            run, f"the run's process {pid} is gone (killed?); marked failed by cti-assets")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        print(f"run {run.run_id} was left STARTED by process {pid}, which is gone: marked "
              "failed and its pool slots freed", file=sys.stderr)
        reaped.append(run.run_id)
    return reaped


def _run_process(instance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was logged) of the run's process, from its first engine event with a pid."""
    import dagster as dg

    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        text = getattr(pid, "value", pid)
        if text is not None and str(text).isdigit():
            return int(str(text)), entry.timestamp
    return None


def _alive(pid: int, logged_at: float) -> bool:
    """Whether the process that logged at `logged_at` with this pid still runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: the pid is taken, be safe
    if _state(pid) == "Z":
        return False  # a zombie: dead, waiting for a parent (or an init slow to reap) to wait
    started = _start_time(pid)
    return started is None or started <= logged_at + 1.0


def _state(pid: int) -> str | None:
    """The process's state letter from /proc on Linux (Z: zombie); None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> float | None:
    """When the process started (epoch seconds), from /proc on Linux; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def materialise(partition_keys, run_config: dict | None = None, job_name: str = "enrichment"):
    """Run the job for each partition in process; print one line per asset as a progress log."""
    import dagster as dg

    defs = load_defs()
    job = defs.resolve_job_def(job_name)
    instance = dagster_instance()
    failed = []
    for key in partition_keys:
        print(f"\n== {job_name} {key}")
        # the run's whole log, stack traces included, stays in the instance for the UI; here the
        # warnings and one line per failed step are printed below
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
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
        for entry in instance.all_logs(result.run_id):
            if entry.level >= logging.WARNING and entry.dagster_event is None:
                where = entry.step_key or job_name
                kind = "warning" if entry.level == logging.WARNING else "error"
                print(f"  {kind} {where}: {readable_line(redact(entry.user_message))}")
        failures = [event for event in result.all_events
                    if event.event_type == dg.DagsterEventType.STEP_FAILURE]
        for event in failures:
            print(f"  FAILED {event.step_key}: {failure_line(event.event_specific_data.error)}")
        if not result.success and not failures:  # failed before or between steps
            run_failure = next((event for event in result.all_events
                                if event.event_type == dg.DagsterEventType.RUN_FAILURE), None)
            error = getattr(run_failure.event_specific_data, "error", None) if run_failure else None
            print(f"  FAILED run: {failure_line(error) if error else 'no step failed'}")
        if not result.success:
            failed.append(key)
    return failed


def failure_line(error: ErrorInfo | None) -> str:
    """What made a step fail, in one line: the innermost cause (Dagster wraps an output's error
    in its own), with any key or token redacted; the stack trace is in the run's log."""
    if error is None:
        return "no error recorded"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    if error.cls_name:
        message = re.sub(rf"^(?:[\w.]+\.)?{re.escape(error.cls_name)}: ", "", message)
        if error.cls_name != "Failure":  # dg.Failure's message is the step's own, for people
            message = f"{error.cls_name}: {message}"
    return readable_line(redact(message))


def _dagster_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dagster", "instance", "concurrency", *args]
    return subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
        command, capture_output=True, text=True, check=False, env=dagster_env()
    )


_LIMIT_LINE = re.compile(r'^"(?P<pool>[^"]+)": \d+ / (?P<limit>\d+) slots occupied$', re.M)


def pool_limits_set() -> dict[str, int]:
    """The pool limits the instance holds (`dagster instance concurrency get --all`)."""
    result = _dagster_cli("get", "--all")
    if result.returncode != 0:
        return {}
    return {m["pool"]: int(m["limit"]) for m in _LIMIT_LINE.finditer(result.stdout)}


def set_pool_limits(limits: dict[str, int] | None = None) -> dict[str, int]:
    """Give each provider pool its limit on the instance through the route Dagster documents,
    `dagster instance concurrency set POOL LIMIT` (there is no public Python API for it). Each
    call is a process that imports Dagster, so only limits that differ are set, one at a time
    (side by side they would fight over the SQLite instance)."""
    from filelock import FileLock

    limits = limits or POOL_LIMITS
    dagster_instance()  # created (or found corrupted) under the lock before any CLI call
    home = ensure_dagster_home()
    with FileLock(str(home / INSTANCE_LOCK), timeout=600):  # one writer of the instance
        current = pool_limits_set()
        for pool, limit in limits.items():
            if current.get(pool) == limit:
                continue
            result = _dagster_cli("set", pool, str(limit))
            if result.returncode != 0:
                lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
                raise CliError(f"could not set the limit of pool {pool}: {lines[-1]}")
    return limits
