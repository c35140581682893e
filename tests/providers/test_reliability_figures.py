"""The reliability figures (docs/reliability.md): each provider fault from the sandbox, at the
runner level (lookup_frame, no Dagster run), with nothing lost. With CTI_RELIABILITY_FIGURES set
to a file path the table is written there (`docs/reliability.md` holds one such run)."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import replace

import pytest

from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame
from tests.providers.test_runner import frame, observable

VALUES = [f"45.83.69.{i}" for i in range(1, 13)]
ALL = 10_000
ROWS: list[str] = []
# name, provider, fault, count, statuses allowed in the output
SCENARIOS = [
    ("429 with Retry-After", base.INTERNETDB, "http_429", 3, {base.OK, base.NOT_FOUND}),
    ("429 forever", base.INTERNETDB, "http_429", ALL, {base.ERROR}),
    ("quota exhausted", base.ABUSEIPDB, "quota", ALL, {base.ERROR}),
    ("5xx burst (2)", base.INTERNETDB, "http_503", 2, {base.OK, base.NOT_FOUND}),
    ("hang", base.INTERNETDB, "hang", ALL, {base.ERROR, base.DEFERRED}),
    ("slow drip", base.INTERNETDB, "slow_drip", ALL, {base.ERROR, base.DEFERRED}),
    ("connection refused", base.INTERNETDB, None, 0, {base.ERROR, base.DEFERRED}),
    ("connection reset", base.INTERNETDB, "connection_reset", ALL, {base.ERROR, base.DEFERRED}),
    ("malformed JSON", base.INTERNETDB, "malformed_json", ALL, {base.ERROR}),
    ("HTML 200 page", base.INTERNETDB, "html_200", ALL, {base.ERROR, base.DEFERRED}),
    ("401", base.INTERNETDB, "http_401", ALL, {base.ERROR}),
    ("403", base.INTERNETDB, "http_403", ALL, {base.ERROR}),
    ("20 MB body", base.INTERNETDB, "huge_body", ALL, {base.ERROR}),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("name", "provider", "fault", "count", "allowed"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])  # fmt: skip
def test_fault_figures(sb, tmp_path, monkeypatch, name, provider, fault, count, allowed):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    env = {**sb.base_urls, "ABUSEIPDB_API_KEY": "abuse-test-key"}
    conf = replace(settings_from_env(provider, env), connect_timeout_s=0.5, timeout_s=1.0,
                   deadline_s=1.5, max_retries=2, backoff_base_s=0.05, backoff_max_s=0.2,
                   max_retry_after_s=2.0, max_workers=4, max_body_bytes=1024 * 1024)
    if fault is None:
        conf = replace(conf, base_url=f"http://127.0.0.1:{_free_port()}")
    else:
        sb.inject(provider, fault, count=count)
    started = time.perf_counter()
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        out, stats = lookup_frame(provider, frame(*(observable(v) for v in VALUES)), conf,
                                  cache=cache)
    wall_s = time.perf_counter() - started
    lost = len(VALUES) - int(out["status"].notna().sum())
    assert lost == 0 and len(out) == len(VALUES)
    assert set(out["status"]) <= allowed, out[["status", "reason"]].value_counts()
    if fault is not None:
        assert stats.http_requests == sb.request_count(provider)
    statuses = Counter(f"{s}/{r}" if isinstance(r, str) else s
                       for s, r in zip(out["status"], out["reason"], strict=True))
    shown = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    requests = (f"{stats.http_requests} connection attempts" if fault is None
                else str(sb.request_count(provider)))
    ROWS.append(f"| {provider} | {name} | completed | {len(VALUES)} | {len(out)} | {lost} | "
                f"{shown} | {requests} | {wall_s:.2f} |")


def test_write_figures_table():
    target = os.environ.get("CTI_RELIABILITY_FIGURES")
    if not target:
        pytest.skip("set CTI_RELIABILITY_FIGURES=<path> to write the figures table")
    assert len(ROWS) == len(SCENARIOS), "run the whole module to write the table"
    header = ("| provider | fault | lookup | in | out | lost | statuses | provider requests "
              "| wall s |\n|---|---|---|---|---|---|---|---|---|\n")
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(header + "\n".join(ROWS) + "\n")
