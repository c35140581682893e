"""Fixtures for the connector: the platform double over the machine's RabbitMQ, a real Dagster
webserver whose runs read that double, and the `cti-assets connector` process itself."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.connector_double import ConnectorDouble, amqp_available
from tests.ui.test_webserver import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               alive: Callable[[], None] | None = None) -> object:
    """Bounded polling on a condition owned by another process."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if alive:
            alive()
        time.sleep(0.05)  # polling another process's state, not waiting for timing
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="module")
def double():
    if not amqp_available():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (guest/guest): the connector's AMQP path "
                    "needs a real broker")
    with ConnectorDouble() as platform:
        yield platform
        platform.delete_queues()
        assert platform.unsupported == []
        assert platform.invalid == [], platform.invalid


@pytest.fixture(scope="module")
def webserver(tmp_path_factory, double):
    """dagster-webserver on loopback; its runs read and write back to the double. One per
    module: a run's step processes are slow to start, so the tests share the code location."""
    from cti_assets.sandbox import ProviderSandbox

    tmp_path = tmp_path_factory.mktemp("webserver")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n"
        "      module_name: tests.connector.inprocess_location\n"
        f"      location_name: cti_assets\n      working_directory: {ROOT}\n")
    port = free_port()
    log_path = tmp_path / "webserver.log"
    with ProviderSandbox(port=0) as sandbox, log_path.open("w") as log:
        env = {**os.environ, **sandbox.base_urls, "DAGSTER_HOME": str(home),
               "CTI_DATA_DIR": str(tmp_path / "data"), "OPENCTI_URL": double.url,
               "OPENCTI_TOKEN": double.token, "CTI_SOURCE": "opencti",
               "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
             "-w", str(workspace)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/server_info", timeout=2).ok
            except requests.ConnectionError:
                return False

        def alive() -> None:
            assert process.poll() is None, log_path.read_text()[-2000:]

        try:
            wait_until(up, 120, "the webserver", alive)
            yield url, env
        finally:
            process.terminate()
            process.wait(timeout=30)


class Connector:
    """One `cti-assets connector` process; restartable with the same id and data dir."""

    def __init__(self, double: ConnectorDouble, env: dict, log_path: Path) -> None:
        self.double = double
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.id = env["CONNECTOR_ID"]

    def start(self) -> Connector:
        registrations = self.double.calls_to("registerConnector")
        log = self.log_path.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "cti_assets.cli", "connector"],
                                        cwd=ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        wait_until(lambda: self.double.calls_to("registerConnector") > registrations, 60,
                   "registration", self.alive)
        return self

    def alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, \
            self.log_path.read_text()[-3000:]

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def ledger_rows(self, sql: str) -> list[tuple]:
        path = Path(self.env["CTI_DATA_DIR"]) / "connector.sqlite"
        if not path.exists():
            return []
        with sqlite3.connect(path) as db:
            try:
                return db.execute(sql).fetchall()
            except sqlite3.OperationalError:
                return []


@pytest.fixture
def connector_factory(tmp_path, double):
    started: list[Connector] = []

    def make(dagster_url: str, data_dir: str | None = None, **extra: str) -> Connector:
        env = {**os.environ, "OPENCTI_URL": double.url, "OPENCTI_TOKEN": double.token,
               "CONNECTOR_ID": str(uuid.uuid4()), "CONNECTOR_LOG_LEVEL": "info",
               "DAGSTER_WEBSERVER_URL": dagster_url,
               "CTI_DATA_DIR": data_dir or str(tmp_path / "data"),
               "PYTHONPATH": str(ROOT), **extra}
        connector = Connector(double, env, tmp_path / "connector.log")
        started.append(connector)
        return connector

    yield make
    for connector in started:
        connector.stop()
