"""Shared by the whole-run reliability tests: an isolated data directory and Dagster home, a day
of observables, the provider sandbox wired into a subprocess's environment, and `dagster asset
materialize` started as a real process (what an operator or cron runs), so kills, concurrency
and pools are exercised as in production rather than in one pytest process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cti_assets.cli.runs import PROJECT_DAGSTER_YAML
from cti_assets.sandbox import ProviderSandbox

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-11-20"
LEAKY_VARS = (
    "DAGSTER_HOME", "CTI_OUTPUTS_BASE", "CTI_SOURCE", "OPENCTI_URL", "OPENCTI_TOKEN",
    "CTI_PARTITIONS_START", "CTI_BATCH_ROWS", "CTI_RATELIMIT_REDIS_URL", "CTI_UNMARKED_TLP",
)
KEYED = ("VIRUSTOTAL", "SHODAN", "ABUSEIPDB", "GREYNOISE", "SECURITYTRAILS")
GENEROUS = {
    "VIRUSTOTAL_PER_MINUTE": "60000", "VIRUSTOTAL_PER_DAY": "100000",
    "SECURITYTRAILS_PER_MONTH": "100000", "SECURITYTRAILS_PER_DAY": "100000",
    "SHODAN_PER_SECOND": "1000", "GREYNOISE_PER_SECOND": "1000", "ABUSEIPDB_PER_SECOND": "1000",
    "SHODAN_INTERNETDB_PER_SECOND": "1000", "SECURITYTRAILS_PER_SECOND": "1000",
    "GREYNOISE_PER_DAY": "100000", "ABUSEIPDB_PER_DAY": "100000",
}
CHEAP = ("shodan_internetdb", "greynoise", "abuseipdb")
CHEAP_SELECTION = ",".join(["observables", *(f"{p}_lookups" for p in CHEAP)])


def public_ips(count: int, third_octet: int = 83) -> list[str]:
    """Addresses the sandbox answers and no special-use rule keeps back (45.83.0.0/16)."""
    return [f"45.{third_octet}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def ipv4_bundle(values: list[str]) -> dict:
    objects = [{"type": "ipv4-addr", "spec_version": "2.1",
                "id": f"ipv4-addr--{uuid.uuid5(uuid.NAMESPACE_URL, v)}", "value": v}
               for v in values]  # fmt: skip
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}


class Site:
    """One isolated installation: data directory, Dagster home (the project's dagster.yaml,
    optionally changed), environment for subprocesses pointed at a sandbox."""

    def __init__(self, root: Path, sandbox: ProviderSandbox, *, key: str = "test-key",
                 instance_yaml: str | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.home = self.data / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "dagster.yaml"
        if instance_yaml is None:
            shutil.copyfile(PROJECT_DAGSTER_YAML, config)
        else:
            config.write_text(instance_yaml)
        self.sandbox = sandbox
        env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARS}
        env.update(sandbox.base_urls)
        env.update(GENEROUS)
        env.update({f"{p}_API_KEY": key for p in KEYED})
        env.update({"CTI_DATA_DIR": str(self.data), "DAGSTER_HOME": str(self.home),
                    "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
        self.env = env
        self._create_instance()

    def _create_instance(self) -> None:
        """Create the instance's storage once, before any run, as the project's CLI does under
        its lock (cti_assets/cli/runs.dagster_instance): two `dagster asset materialize` started
        together on a fresh home would both create it (issue 21 item 1)."""
        with self.instance() as instance:
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            if instance.schedule_storage is not None:
                instance.schedule_storage.all_instigator_state()

    def import_values(self, values: list[str], day: str = DAY) -> None:
        """Import the values as observables created on `day`, through the CLI (a process)."""
        path = self.root / f"import-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(ipv4_bundle(values)))
        moment = datetime.fromisoformat(f"{day}T09:00:00").replace(tzinfo=UTC).isoformat()
        done = self.cli("import", str(path), "--created-at", moment)
        assert done.returncode == 0, done.stderr

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", "cti_assets.cli", *args], env=self.env, cwd=self.root,
            capture_output=True, text=True, timeout=timeout, check=False)

    def materialize(self, selection: str = "*", day: str = DAY, *,
                    own_group: bool = True, log_name: str | None = None,
                    run_config: dict | None = None) -> subprocess.Popen:
        """`dagster asset materialize` of `selection` for `day`, as a process (its own process
        group by default, so the whole group can be killed); `run_config` is passed as
        `--config-json` (e.g. the sensor's in-process choice)."""
        log = open(self.root / (log_name or f"materialize-{uuid.uuid4().hex[:6]}.log"), "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m",
                   "cti_assets.definitions", "--select", selection, "--partition", day]
        if run_config is not None:
            command += ["--config-json", json.dumps(run_config)]
        return subprocess.Popen(  # noqa: S603
            command, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=own_group)

    def instance(self):
        """The site's Dagster instance (the caller closes it)."""
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def processes(self) -> list[int]:
        """Live processes (other than this one) whose environment names this site's data
        directory: every process a run of this site started, whoever its parent is now."""
        marker = f"CTI_DATA_DIR={self.data}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and marker in environ.split(b"\0"):
                found.append(int(entry.name))
        return found


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


# The long scenarios run under `make reliability` (CTI_RELIABILITY=1); plain pytest skips them.
LONG = os.environ.get("CTI_RELIABILITY") == "1"


def long_scenario(reason: str):
    import pytest

    return pytest.mark.skipif(not LONG, reason=f"{reason}: set CTI_RELIABILITY=1 "
                              "(make reliability) to run it")  # fmt: skip


def record_figure(scenario: str, test: str, figure: str) -> None:
    """Append one row of the figures table when CTI_RELIABILITY_RUN_FIGURES names a file (make
    reliability regenerates docs/reliability.md from it)."""
    target = os.environ.get("CTI_RELIABILITY_RUN_FIGURES")
    print(f"figure: {scenario}: {figure}")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"scenario": scenario, "test": test, "figure": figure}) + "\n")


def cached_keys(data_dir: Path) -> set[tuple[str, str]]:
    """(provider, value) of every answer in the site's response cache."""
    import sqlite3

    path = data_dir / "cache.sqlite"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as connection:
        return {(p, v) for p, v in connection.execute("SELECT provider, value FROM answers")}
