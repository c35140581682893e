"""Latency from a new observable imported to its write-back, with the sensor running.

`dagster dev` (webserver and daemon, the repo's dagster.yaml in a temp DAGSTER_HOME) runs with
the new-observables sensor on at its default interval, the providers pointed at the sandbox
(its own process, 100 ms latency). A warm-up observable is imported first and waited for, so
the daemon and code server are up; then each measured observable is imported with
`cti-assets import` and the embedded store is polled until the note written back about it
appears.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bench import workload
from bench.sandbox_proc import SandboxProcess
from cti_assets import settings

REPO = Path(__file__).resolve().parent.parent
FIRST_INDEX = 900_000  # values no other benchmark uses


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("dagster dev exited before serving")
        try:
            with urllib.request.urlopen(url, timeout=2):  # loopback only
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"dagster dev did not answer on {url} within {timeout_s:.0f} s")


def _import(env: dict, index: int, folder: Path) -> str:
    """`cti-assets import` of one new observable created now; its STIX id."""
    obj = workload.sco(index, salt=f"latency-{index}")
    path = folder / f"latency-{index}.json"
    path.write_text(json.dumps({"type": "bundle", "id": f"bundle--{obj['id'].split('--')[1]}",
                                "objects": [obj]}))
    created = datetime.now(UTC).isoformat()
    subprocess.run([sys.executable, "-m", "cti_assets.cli", "import", str(path),
                    "--created-at", created], env=env, check=True, capture_output=True)
    return obj["id"]


def _note_about(stix_id: str) -> bool:
    from cti_assets.sources.local import LocalStixStore

    notes = LocalStixStore().all_objects(types=["note"])
    return any(stix_id in (note.get("object_refs") or []) for note in notes)


def _wait_note(stix_id: str, started: float, timeout_s: float) -> float | None:
    while time.monotonic() - started < timeout_s:
        if _note_about(stix_id):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def measure(args, scratch: Path, samples: int = 2) -> dict:
    from cti_assets.cli.demo import point_providers_at

    scratch.mkdir(parents=True, exist_ok=True)
    home = scratch / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    saved = dict(os.environ)
    sandbox = SandboxProcess(latency_ms=args.latency_ms)
    process = None
    try:
        os.environ.update(CTI_DATA_DIR=str(scratch / "data"), DAGSTER_HOME=str(home),
                          CTI_SENSOR_DEFAULT_ON="1")
        point_providers_at(sandbox.base_urls)
        env = dict(os.environ)
        port = _free_port()
        process = subprocess.Popen(  # our own interpreter, fixed arguments, own session
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _wait_http(f"http://127.0.0.1:{port}/server_info", 120, process)
        warm_started = time.monotonic()
        warm = _wait_note(_import(env, FIRST_INDEX, scratch), warm_started,
                          args.latency_timeout_s * 2)
        measured, imported_at = [], []
        for k in range(1, samples + 1):
            started = time.monotonic()
            imported_at.append(time.time())
            stix_id = _import(env, FIRST_INDEX + k, scratch)
            measured.append(_wait_note(stix_id, started, args.latency_timeout_s))
        phases = _run_phases(imported_at)
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        sandbox.stop()
        os.environ.clear()
        os.environ.update(saved)
    done = [s for s in measured if s is not None]
    return {
        "sensor_interval_s": settings.sensor_interval_s(),
        "timeout_s": args.latency_timeout_s,
        "warm_up_s": round(warm, 1) if warm is not None else None,
        "samples_s": [round(s, 1) if s is not None else None for s in measured],
        "latency_s": round(max(done), 1) if done and len(done) == len(measured) else None,
        "missed": len(measured) - len(done),
        "phases_s": phases,
    }


def _run_phases(imported_at: list[float]) -> list[dict]:
    """Per measured import, from the instance's run records: the wait for the sensor to
    create the run, the queue and launch until it started, and the run itself."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
    phases = []
    for moment in imported_at:
        record = next((r for r in records if r.create_timestamp.timestamp() >= moment), None)
        if record is None or record.start_time is None or record.end_time is None:
            phases.append({})
            continue
        created = record.create_timestamp.timestamp()
        phases.append({
            "sensor_wait": round(created - moment, 1),
            "queue_and_launch": round(record.start_time - created, 1),
            "run": round(record.end_time - record.start_time, 1),
        })
    return phases


def section(result: dict) -> str:
    samples = ", ".join("timed out" if s is None else f"{s} s" for s in result["samples_s"])
    worst = result["latency_s"]
    worst_text = (f"**{worst} s**" if worst is not None
                  else f"**not written back within {result['timeout_s']:.0f} s**")  # fmt: skip
    return (
        "## 4. Latency\n\n"
        "`dagster dev` (webserver and daemon, the repo's dagster.yaml) with the "
        f"new-observables sensor on at its default {result['sensor_interval_s']} s interval; "
        "the providers on the sandbox at the configured latency. After a warm-up observable "
        f"({result['warm_up_s']} s, includes the daemon's first ticks), each new observable "
        "is imported with `cti-assets import` and the store polled until its write-back note "
        f"appears. Samples: {samples}; worst {worst_text} (target <= 60 s). The figure is the "
        "wait for the next sensor tick (0 to the interval) plus one run of the job. Where "
        f"the time went, per sample (from the run records): {result.get('phases_s')}.\n"
    )
