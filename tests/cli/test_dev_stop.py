"""`cti-assets dev` stopped with SIGTERM (docker stop, systemd, kill), end to end.

The real command, in a session of its own on free ports with a throwaway data directory and
Dagster home, is left to start until the UI answers; then SIGTERM goes to the command alone, or
to its whole process group. Every process of the tree (`dagster dev`, its webserver, daemon and
code servers), and any process started with the throwaway data directory, must be gone within a
deadline, the command must exit 0 and both ports must be free.

The group case starts the command as a background job of a script gets started, with SIGINT
ignored: `dagster dev` makes SIGTERM do what SIGINT does, so a SIGINT ignored by inheritance made
it (and its code servers) ignore SIGTERM too, which is how the trial left it running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from cti_assets.cli.dev import DEV_LEFTOVER_GRACE_S, DEV_STOP_GRACE_S
from tests.reliability.support import LEAKY_VARS, REPO
from tests.reliability.test_dev_kill import alive, descendants, free_port, poll

# dagster dev's start-up on a loaded 2-core machine: up to a few minutes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STARTUP_S = 400
# the command's own bounds (grace for dagster dev, then for what is left of its group) plus a
# margin for a loaded machine; a graceful stop takes a few seconds
STOP_DEADLINE_S = DEV_STOP_GRACE_S + DEV_LEFTOVER_GRACE_S + 20


def marked(data: Path) -> set[int]:
    """Live processes, other than this one, started with this data directory."""
    marker = f"CTI_DATA_DIR={data}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def port_free(port: int) -> bool:
    """Whether a server could listen on the port now (SO_REUSEADDR, as servers bind)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ui_answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


@pytest.mark.parametrize("target", ["command", "process-group", "command-killed",
                                    "no-sandbox"])
def test_sigterm_stops_dev_and_everything_it_started(tmp_path, target):
    data = tmp_path / "data"
    ui, sandbox = free_port(), free_port()
    shutil.copyfile(REPO / "workspace.yaml", tmp_path / "workspace.yaml")
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARS}
    env.update({"CTI_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home"),
                "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    command = [sys.executable, "-m", "cti_assets.cli", "dev", "--port", str(ui),
               "--sandbox-port", str(sandbox)]  # fmt: skip
    if target == "no-sandbox":  # the real providers: nothing may answer in their place
        command.append("--no-sandbox")
    if target == "process-group":  # as a script's background job: SIGINT ignored, then exec
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    log = tmp_path / "dev.log"
    dev = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        command, env=env, cwd=tmp_path, stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True)
    tree: set[int] = set()
    try:
        poll(lambda: ui_answers(ui) or dev.poll() is not None, STARTUP_S, "the UI to answer")
        assert dev.poll() is None, log.read_text()[-3000:]
        tree = {dev.pid} | descendants(dev.pid) | marked(data)
        assert len(tree) >= 4, tree  # the command, dagster dev, its webserver and daemon at least

        if target == "no-sandbox":
            assert port_free(sandbox) and "real providers; source local" in log.read_text()
        if target in ("command", "no-sandbox"):
            dev.send_signal(signal.SIGTERM)
        elif target == "process-group":
            os.killpg(dev.pid, signal.SIGTERM)
        else:  # killed outright: dagster dev, in a group of its own, learns it from the kernel
            dev.send_signal(signal.SIGKILL)
        code = dev.wait(timeout=STOP_DEADLINE_S)
        poll(lambda: not any(alive(p) for p in tree) and not marked(data), STOP_DEADLINE_S,
             "every process of `cti-assets dev` to end")
        left = [p for p in tree if alive(p)]
        assert code == (-signal.SIGKILL if target == "command-killed" else 0) and not left, (
            code, left, log.read_text()[-3000:])
        assert port_free(ui) and port_free(sandbox)
        if target != "command-killed":
            assert "stopping dagster dev" in log.read_text()
    finally:
        for pid in tree | marked(data) | {dev.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        dev.wait(timeout=10)
