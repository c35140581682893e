"""The connector model the anchors use, as a baseline: one observable at a time, each provider
in turn, one blocking request each, no cache, no concurrency (reference/anchors.md, Part A).

The same client classes parse the answers (so both sides do the same work per response), but
without the limiter, the cache or the thread pool.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pandas as pd

from bench import workload
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.providers.registry import CLIENTS

MAX_FULL_RUN_S = 15 * 60
PER_CALL_OVERHEAD_S = 0.005  # client time per request on top of the latency, for estimates


def estimate_s(total_calls: int, latency_ms: float) -> float:
    return total_calls * (latency_ms / 1000.0 + PER_CALL_OVERHEAD_S)


def run_sequential(frame: pd.DataFrame, base_urls: dict[str, str], latency_ms: float,
                   rates: dict[str, float], providers=workload.API_PROVIDERS) -> dict:
    """Each observable, each provider in scope, in turn; wall time and time per provider."""
    clients = {p: CLIENTS[p](workload.bench_settings(p, base_urls, rates[p], latency_ms))
               for p in providers}  # fmt: skip
    calls: dict[str, int] = defaultdict(int)
    busy_s: dict[str, float] = defaultdict(float)
    statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    started = time.perf_counter()
    try:
        for obs in frame[frame["status"] == "ok"].itertuples():
            for provider in providers:
                if obs.entity_type not in PROVIDER_SCOPE[provider]:
                    continue
                before = time.perf_counter()
                result = clients[provider].lookup(obs.entity_type, obs.normalized_value)
                busy_s[provider] += time.perf_counter() - before
                calls[provider] += 1
                statuses[provider][result.status] += 1
    finally:
        for client in clients.values():
            client.close()
    return {
        "wall_s": round(time.perf_counter() - started, 3),
        "calls": dict(calls),
        "busy_s": {p: round(s, 3) for p, s in busy_s.items()},
        "statuses": {p: dict(s) for p, s in statuses.items()},
    }


def measure(n: int, sandbox, latency_ms: float, rates: dict[str, float],
            sample: int | None = None) -> dict:
    """The baseline for n observables; with `sample` (or when a full run would take longer
    than MAX_FULL_RUN_S) only the first `sample` are run and the time is extrapolated."""
    frame = workload.observables(n)
    expected = workload.expected_calls(frame)
    total_calls = sum(expected.values())
    if sample is None and estimate_s(total_calls, latency_ms) > MAX_FULL_RUN_S:
        sample = max(20, int(n * MAX_FULL_RUN_S / estimate_s(total_calls, latency_ms) / 2))
    measured_frame = frame if sample is None or sample >= n else frame.iloc[:sample]
    sandbox.reset()
    run = run_sequential(measured_frame, sandbox.base_urls, latency_ms, rates)
    run["sandbox_requests"] = sandbox.calls()
    measured_calls = sum(run["calls"].values())
    extrapolated = len(measured_frame) < n
    scale = total_calls / measured_calls if extrapolated else 1.0
    per_call = {p: run["busy_s"][p] / run["calls"][p] for p in run["calls"]}
    # the same connectors, each in its own process: each provider still one call at a time
    per_connector_s = max(per_call[p] * expected[p] for p in per_call)
    return {
        "n": n,
        "measured_observables": len(measured_frame),
        "extrapolated": extrapolated,
        "wall_s": round(run["wall_s"] * scale, 3),
        "measured_wall_s": run["wall_s"],
        "expected_calls": expected,
        "measured": run,
        "parallel_connectors_s": round(per_connector_s, 3),
    }
