"""The provider sandbox in its own process, so its request handling never competes with the
benchmarked clients for one interpreter lock; driven over its /_sandbox admin endpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from cti_assets.sandbox.server import BASE_URL_PATHS


class SandboxProcess:
    """`cti-assets sandbox --port 0` as a child process; base_urls, stats, reset, stop."""

    def __init__(self, latency_ms: int = 100, rate_limits: dict[str, float] | None = None,
                 startup_timeout_s: float = 30.0) -> None:
        command = [sys.executable, "-m", "cti_assets.cli", "sandbox", "--port", "0",
                   "--latency-ms", str(int(latency_ms))]
        if rate_limits:
            command += ["--rate-limits", json.dumps(rate_limits)]
        self.latency_ms = latency_ms
        self.rate_limits = dict(rate_limits or {})
        self.process = subprocess.Popen(  # our own interpreter, fixed arguments
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self._wait_for_url(startup_timeout_s)

    def _wait_for_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                error = self.process.stderr.read() if self.process.stderr else ""
                raise RuntimeError(f"the sandbox process exited: {error.strip()[-500:]}")
            if line.startswith("# provider sandbox on "):
                return line.split()[4].rstrip(";")
        self.stop()
        raise RuntimeError("the sandbox process did not start in time")

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: f"{self.url}{path}" for name, path in BASE_URL_PATHS.items()}

    def _admin(self, method: str, action: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_sandbox/{action}", data=data,
                                         method=method)
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            return json.loads(response.read())

    def stats(self) -> dict:
        """{"total": n, "providers": {name: {"total": n, "by_status": {...}}}}."""
        return self._admin("GET", "stats")

    def calls(self) -> dict[str, int]:
        """Requests received per provider since the last reset."""
        return {p: int(s["total"]) for p, s in self.stats()["providers"].items()}

    def by_status(self) -> dict[str, dict[str, int]]:
        return {p: dict(s["by_status"]) for p, s in self.stats()["providers"].items()}

    def reset(self) -> None:
        """Clear the request log, rate windows and quota usage."""
        self._admin("POST", "reset", {})

    def configure(self, config: dict) -> None:
        self._admin("POST", "config", config)

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen) -> None:
    """Terminate a helper process (kill it after 10 s) and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
