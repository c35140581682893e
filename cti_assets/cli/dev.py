"""`cti-assets dev` (`make dev`): `dagster dev` with the provider sandbox and the sensor on, and
everything it started stopped on SIGTERM (docker stop, systemd, kill) as on Ctrl-C.

`dagster dev` makes SIGTERM do what SIGINT does, but a process started as a background job
inherits SIGINT ignored, so its SIGTERM was ignored too and a terminated `cti-assets dev` left the
webserver, daemon and code servers running. Here `dagster dev` runs in a process group of its
own, and this process alone decides when it stops; if this process is killed outright, the
kernel stops `dagster dev` the graceful way (Linux).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from cti_assets import settings
from cti_assets.cli.demo import point_providers_at, refuse_sandbox_with_opencti
from cti_assets.cli.errors import CliError
from cti_assets.cli.runs import dagster_env, set_pool_limits

# `cti-assets dev` asked to stop (SIGTERM, SIGINT, SIGHUP): how long `dagster dev` gets for its
# own graceful shutdown (webserver, daemon, code servers; a few seconds as a rule), then how long
# what is left of its process group gets to end, before what remains is killed.
DEV_STOP_GRACE_S = 30.0
DEV_LEFTOVER_GRACE_S = 10.0


class _DevStop:
    """What `cti-assets dev` does on SIGTERM, SIGINT or SIGHUP: ask `dagster dev` to stop, once,
    the way Ctrl-C does (SIGINT: it tells its webserver and daemon through their shutdown pipes
    and stops its code servers), and note when, so that what has not ended after the grace is
    killed. A later signal cuts the grace short. The handler only notes and forwards: the main
    loop (run_dev) does the waiting."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.asked_at: float | None = None
        self.hurry = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Handle the stopping signals in this process. `dagster dev` must get SIGINT's default
        action, whatever this process inherited: started as a background job of a script, SIGINT
        is ignored and the child would inherit that, and `dagster dev` (which makes SIGTERM do
        what SIGINT does) would then ignore SIGTERM as well and never stop. A signal with a
        handler is reset to its default in the child, so an ignored SIGINT is handled here by a
        handler that does nothing (still ignored here) and SIGHUP, when ignored (nohup), stays
        ignored."""
        for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
            if signum is None:
                continue
            previous = signal.getsignal(signum)
            ignored = previous == signal.SIG_IGN and signum != signal.SIGTERM
            if ignored and signum != signal.SIGINT:
                continue
            self._previous[signum] = previous
            signal.signal(signum, _ignore if ignored else self)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.asked_at is not None:
            self.hurry = True
            return
        self.asked_at = time.monotonic()
        self.signal_name = signal.Signals(signum).name
        self.forward()

    def watch(self, process: subprocess.Popen) -> None:
        """The `dagster dev` process to stop; stopped at once when a signal came before it."""
        self.process = process
        if self.asked_at is not None:
            self.forward()

    def forward(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def overdue(self) -> bool:
        return self.asked_at is not None and (
            self.hurry or time.monotonic() - self.asked_at > DEV_STOP_GRACE_S)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A handler that does nothing: the signal stays ignored here, not in a child."""


def _group_members(pgid: int) -> list[int]:
    """The live processes of a process group (zombies are dead): from /proc on Linux; elsewhere
    [pgid] while the group has any process at all."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _end_group(pgid: int, grace_s: float) -> list[int]:
    """Wait up to grace_s for the process group to end by itself, then kill what is left (its
    pids). `dagster dev` leads the group, so it is everything it started: webserver, daemon,
    code servers and their run workers (none of them starts a group of its own)."""
    deadline = time.monotonic() + grace_s
    while (left := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling other processes' exit: no handle to wait on
    if left:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return []
    return left


def _wait_for_dev(dev: subprocess.Popen, stop: _DevStop) -> int:
    """Wait for `dagster dev` to end; once a stop was asked for, for DEV_STOP_GRACE_S at most,
    then its process group is killed. Its exit code, 0 when it was asked to stop."""
    told = False
    while True:
        try:
            code = dev.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop.asked_at is not None and not told:
            print(f"cti-assets dev: {stop.signal_name}: stopping dagster dev", file=sys.stderr)
            told = True
        if stop.overdue():
            print(f"cti-assets dev: dagster dev did not stop within {DEV_STOP_GRACE_S:g} s: "
                  "killed with its processes", file=sys.stderr)
            try:
                os.killpg(dev.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = dev.wait()
            break
    if stop.asked_at is not None:
        return 0
    return 128 - code if code < 0 else code


# Run in the child before `dagster dev` replaces it: the kernel sends it SIGINT (its graceful
# stop) when this process dies, however (PR_SET_PDEATHSIG survives exec). It fires when the
# thread that started the child ends: run_dev starts it from the main thread, which ends only
# with the process. A parent already gone by then is seen by the pid check.
_PARENT_DEATH_SIGINT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def _until_this_process_dies() -> list[str]:
    """The start of the command that runs a Python module as a child stopped by SIGINT when
    this process dies, even by SIGKILL (Linux); elsewhere just the interpreter."""
    if not sys.platform.startswith("linux"):
        return [sys.executable]
    return [sys.executable, "-c", _PARENT_DEATH_SIGINT, str(os.getpid())]


def check_ui_port(port: int) -> None:
    """CliError unless the Dagster UI can listen on `port` (127.0.0.1, where `dagster dev`
    serves): a taken port would leave the webserver's error buried in its log while the daemon
    and sensor run on without a UI, and port 0 would quietly become 3000."""
    if port == 0:
        raise CliError("--port 0: the Dagster UI needs a fixed port (1-65535)")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise CliError(f"the Dagster UI cannot listen on port {port} "
                           f"({error.strerror or error}): give another --port") from None


def run_dev(sandbox_port: int = 8765, ui_port: int = 3000, sandbox: bool = True) -> int:
    """dagster dev with the sensor switched on, and the sandbox in this process answering for
    every provider (never against OpenCTI), or with `sandbox=False` the real providers.

    `dagster dev` runs in a process group of its own, which holds everything it starts: this
    process alone decides when it stops. SIGTERM (docker stop, systemd, kill), SIGINT (Ctrl-C)
    or SIGHUP to this process, or to its process group, stop it through its graceful path
    (_DevStop), within DEV_STOP_GRACE_S, then whatever of its group is left (within
    DEV_LEFTOVER_GRACE_S, then killed), then the sandbox."""
    from cti_assets.sandbox import ProviderSandbox

    if sandbox:
        refuse_sandbox_with_opencti()
    check_ui_port(ui_port)
    answering = None
    if sandbox:
        try:
            answering = ProviderSandbox(port=sandbox_port).start()
        except OSError as error:
            raise CliError(f"cannot serve the provider sandbox on port {sandbox_port} "
                           f"({error.strerror or error}): give another --sandbox-port") from None
    stop = _DevStop()
    dev: subprocess.Popen | None = None
    try:
        if answering is not None:
            point_providers_at(answering.base_urls)
        os.environ["CTI_SENSOR_DEFAULT_ON"] = "1"
        set_pool_limits()
        providers = (f"provider sandbox on {answering.url}" if answering is not None
                     else f"real providers; source {settings.source_kind()}")
        print(f"{providers}; pools set; sensor on")
        command = [*_until_this_process_dies(), "-m", "dagster", "dev", "-w", "workspace.yaml",
                   "-p", str(ui_port)]  # fmt: skip
        env = dagster_env()
        stop.install()
        if stop.asked_at is not None:  # asked to stop before anything was started
            return 0
        # our own interpreter and fixed arguments, with the same data dir and Dagster home
        dev = subprocess.Popen(command, env=env, process_group=0)  # noqa: S603
        stop.watch(dev)
        return _wait_for_dev(dev, stop)
    finally:
        try:
            if dev is not None:
                left = _end_group(dev.pid, DEV_LEFTOVER_GRACE_S)
                if left:
                    print(f"cti-assets dev: killed {len(left)} process(es) dagster dev left "
                          "running", file=sys.stderr)
        finally:
            if answering is not None:
                answering.stop()
            stop.uninstall()
