"""Throughput of whole days through the Dagster job itself, as production runs it.

bench/throughput.py measures the provider runner alone, one process per provider. Here a day
is materialised by `dagster asset materialize` (the terminal launch dagster.yaml describes) in
its own process: the same definitions (cti_assets.definitions), the production executor
(multiprocess, CTI_MAX_CONCURRENT_STEPS), the pools set as `cti-assets pools` sets them, a real
DAGSTER_HOME with the repo's dagster.yaml, and every provider pointed at the sandbox (its own
process) with its latency and rate limits. Each size gets a fresh data directory (empty cache,
store, ledger and limiter buckets).

The timings come from the run's step events in the instance; the quota bound from the requests
the sandbox admitted (max over providers of calls / rate); the connector model from the
per-call time of bench/baseline.py measured on a sample and multiplied by the calls.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from unittest import mock

from bench import workload
from cti_assets import settings
from cti_assets.providers import base
from cti_assets.providers.config import DEFAULTS, KEY_VARS, URL_VARS, env_prefix

REPO = Path(__file__).resolve().parent.parent
DAY = "2026-11-20"
SIZES = (1_000, 10_000)
# Every provider the job calls (network context never leaves the host).
JOB_PROVIDERS = tuple(p for p in base.ALL_PROVIDERS if p != base.NETWORK_CONTEXT)
LOOKUP_SUFFIX = "_lookups"
UNLIMITED_DAY, UNLIMITED_MONTH = 10_000_000, 100_000_000


def job_rates(rates: dict[str, float]) -> dict[str, float]:
    """The benchmark's rates for the six API providers, and for the other providers of the
    job a rate that gives them the same time per day as the others (about 10 s per 1,000
    observables of the workload's mix: calls per 1,000 / 10, at least 10 a second)."""
    per_thousand = workload.expected_calls(workload.observables(1000), JOB_PROVIDERS)
    return {p: float(rates[p]) if p in rates else float(max(10, round(per_thousand[p] / 10)))
            for p in JOB_PROVIDERS}  # fmt: skip


def provider_env(base_urls: dict[str, str], rates: dict[str, float],
                 latency_ms: float) -> dict[str, str]:
    """Environment variables that point every provider at the sandbox with a placeholder key,
    its rate per second, enough workers to keep that rate in flight, and day/month/minute
    windows too wide to bind (the benchmark measures the per-second quota)."""
    env = {var: base_urls[var] for var in URL_VARS.values()}
    for var in {v for v in KEY_VARS.values() if v}:
        env[var] = workload.PLACEHOLDER_KEY
    for provider, rate in rates.items():
        prefix, defaults = env_prefix(provider), DEFAULTS[provider]
        env[f"{prefix}_PER_SECOND"] = f"{rate:g}"
        env[f"{prefix}_MAX_WORKERS"] = str(workload.workers_for(rate, latency_ms))
        if defaults.per_minute is not None:
            env[f"{prefix}_PER_MINUTE"] = str(math.ceil(rate * 60))
        if defaults.per_day is not None:
            env[f"{prefix}_PER_DAY"] = str(UNLIMITED_DAY)
        if defaults.per_month is not None:
            env[f"{prefix}_PER_MONTH"] = str(UNLIMITED_MONTH)
    return env


def fresh_home(folder: Path) -> Path:
    """A Dagster home holding the repo's dagster.yaml."""
    home = folder / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    return home


def _reap_descendants_here() -> None:
    """Become the reaper of this process's orphaned descendants (Linux's child subreaper). The
    run's steps are forked by a forkserver that outlives the run process by a moment; reparented
    here and reaped, its CPU and that of every step it reaped count in RUSAGE_CHILDREN."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _reap_new_children(before: set[int]) -> None:
    """Wait for every child that was not there before the launch (the orphaned forkserver)."""
    import psutil

    for child in psutil.Process().children():
        if child.pid not in before:
            os.waitpid(child.pid, 0)


def launch(day: str, env: dict[str, str], log: Path) -> dict:
    """`dagster asset materialize` of every asset for `day` in a child process; its wall time
    and the CPU seconds of the whole process tree (run process, its forkserver and the step
    processes)."""
    import psutil

    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m",
               "cti_assets.definitions", "--select", "*", "--partition", day]
    _reap_descendants_here()
    children_before = {child.pid for child in psutil.Process().children()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(command, env=env, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                               cwd=REPO)
    wall = time.perf_counter() - started
    _reap_new_children(children_before)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"exit_code": code, "process_wall_s": round(wall, 3),
            "cpu_s": round((after.ru_utime - before.ru_utime)
                           + (after.ru_stime - before.ru_stime), 2)}


def step_timeline(records) -> dict[str, dict[str, float]]:
    """Per step key: when the executor started its process (STEP_WORKER_STARTING), when its
    body started (STEP_START) and when it ended (STEP_SUCCESS / STEP_FAILURE), epoch seconds."""
    steps: dict[str, dict[str, float]] = {}
    for entry in records:
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        step = steps.setdefault(entry.step_key, {})
        kind = event.event_type_value
        if kind == "STEP_WORKER_STARTING":
            step["first"] = entry.timestamp
        elif kind == "STEP_START":
            step["start"] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            step["end"] = entry.timestamp
            step["ok"] = float(kind == "STEP_SUCCESS")
    return steps


def run_events(home: Path) -> tuple[dict, dict[str, dict[str, float]]]:
    """The latest run of the instance in `home`: its status and start/end, and its steps."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        record = instance.get_run_records(limit=1)[0]
        records = instance.all_logs(record.dagster_run.run_id)
        run = {"run_id": record.dagster_run.run_id,
               "status": record.dagster_run.status.value,
               "start": record.start_time, "end": record.end_time}
    return run, step_timeline(records)


def lookup_phase(steps: dict[str, dict[str, float]]) -> dict:
    """Wall of the provider lookups (first lookup step start to last lookup step end), the
    triage gap and each step's process start-up and body time."""
    lookups = {k: s for k, s in steps.items()
               if k.endswith(LOOKUP_SUFFIX) and k != f"{base.NETWORK_CONTEXT}{LOOKUP_SUFFIX}"
               and "start" in s and "end" in s}  # fmt: skip
    if not lookups:
        return {}
    first = min(s["start"] for s in lookups.values())
    last = max(s["end"] for s in lookups.values())
    cheap = [s for k, s in lookups.items() if k[: -len(LOOKUP_SUFFIX)] in base.CHEAP_PROVIDERS]
    expensive = [s for k, s in lookups.items()
                 if k[: -len(LOOKUP_SUFFIX)] in base.EXPENSIVE_PROVIDERS]
    triage = steps.get("lookup_triage", {})
    phase = {"lookup_wall_s": round(last - first, 3)}
    if cheap and expensive and "start" in triage:
        cheap_end = max(s["end"] for s in cheap)
        phase.update({
            "cheap_phase_s": round(cheap_end - first, 3),
            "triage_launch_to_end_s": round(triage["end"] - cheap_end, 3),
            "triage_body_s": round(triage["end"] - triage["start"], 3),
            "expensive_phase_s": round(max(s["end"] for s in expensive) - triage["end"], 3),
        })
    return phase


def step_rows(steps: dict[str, dict[str, float]], origin: float) -> dict[str, dict]:
    """Each step relative to the run's start: launched, body start, end, start-up, body."""
    rows = {}
    for key, s in sorted(steps.items(), key=lambda kv: kv[1].get("start", 0.0)):
        if "start" not in s or "end" not in s:
            continue
        first = s.get("first", s["start"])
        rows[key] = {"launched_s": round(first - origin, 2),
                     "start_s": round(s["start"] - origin, 2),
                     "end_s": round(s["end"] - origin, 2),
                     "startup_s": round(s["start"] - first, 2),
                     "body_s": round(s["end"] - s["start"], 2),
                     "ok": bool(s.get("ok", 0))}
    return rows


def quota_bound(admitted: dict[str, int], rates: dict[str, float]) -> tuple[float, str | None]:
    """max over providers of admitted calls / rate, and the provider that sets it."""
    times = {p: admitted[p] / rates[p] for p in admitted if admitted[p] and p in rates}
    if not times:
        return 0.0, None
    provider = max(times, key=times.__getitem__)
    return times[provider], provider


def phase_bound(admitted: dict[str, int], rates: dict[str, float]) -> float:
    """The least time the job's order allows: the expensive lookups start after triage, which
    reads every cheap lookup, so the slowest cheap provider's calls / rate and then the slowest
    expensive provider's follow one another."""
    def slowest(group) -> float:
        return max((admitted[p] / rates[p] for p in group if admitted.get(p)), default=0.0)

    return slowest(base.CHEAP_PROVIDERS) + slowest(base.EXPENSIVE_PROVIDERS)


def documented_quota_bounds(calls: dict[str, int]) -> dict:
    """The job's bounds for the same calls at the providers' documented default quotas
    (providers.config.DEFAULTS: VirusTotal 4 a minute and 500 a day, and so on): computed, not
    measured. A call beyond a daily or monthly cap is not sent today (triage defers it), so a
    provider needs min(calls, cap) / rate. `ordered` is the job's cheap-then-expensive bound;
    `streamed` is what deciding each observable as soon as its cheap answers are in would allow:
    exact only for a provider whose cap does not bind (the day's best N cannot be known before
    the day's last cheap answer), so a capped expensive provider still starts after the cheap
    phase."""
    providers: dict[str, dict] = {}
    for provider, wanted in calls.items():
        chosen = DEFAULTS[provider]
        rate = chosen.per_second or (chosen.per_minute / 60 if chosen.per_minute else None)
        if not rate or not wanted:
            continue
        caps = [cap for cap in (chosen.per_day, chosen.per_month) if cap]
        cap = min(caps) if caps else None
        sent = min(wanted, cap) if cap is not None else wanted
        providers[provider] = {"rate": round(rate, 4), "cap": cap, "calls": wanted,
                               "sent": sent, "binds": cap is not None and wanted > cap,
                               "seconds": round(sent / rate, 1)}

    def slowest(group, binds: bool | None = None) -> float:
        return max((row["seconds"] for p, row in providers.items()
                    if p in group and (binds is None or row["binds"] == binds)), default=0.0)

    cheap = slowest(base.CHEAP_PROVIDERS)
    streamed = max(cheap + slowest(base.EXPENSIVE_PROVIDERS, binds=True),
                   slowest(base.EXPENSIVE_PROVIDERS, binds=False), cheap)
    return {"providers": providers,
            "quota_bound_s": max((row["seconds"] for row in providers.values()), default=0.0),
            "ordered_bound_s": cheap + slowest(base.EXPENSIVE_PROVIDERS),
            "streamed_bound_s": streamed}


def connector_per_call(sandbox, latency_ms: float, rates: dict[str, float],
                       sample: int) -> dict:
    """bench/baseline.py's connector model (one observable at a time, each provider in turn,
    one blocking request each, no cache) on the first `sample` observables, every provider of
    the job: seconds per call for each provider."""
    from bench.baseline import run_sequential

    sandbox.reset()
    run = run_sequential(workload.observables(sample), sandbox.base_urls, latency_ms, rates,
                         providers=JOB_PROVIDERS)
    per_call = {p: run["busy_s"][p] / run["calls"][p] for p in run["calls"] if run["calls"][p]}
    return {"sample_observables": sample, "sample_wall_s": run["wall_s"],
            "sample_calls": run["calls"], "per_call_s": {p: round(v, 5)
                                                          for p, v in per_call.items()}}


def measure_size(n: int, sandbox, rates: dict[str, float], latency_ms: float, folder: Path,
                 home: Path, per_call: dict[str, float]) -> dict:
    """One fresh day of n observables through the job; its figures."""
    from cti_assets.sources.local import LocalStixStore

    data = folder / "data"
    os.environ["CTI_DATA_DIR"] = str(data)
    workload.import_day(LocalStixStore(), range(n), DAY)
    env = {**os.environ, "CTI_DATA_DIR": str(data), "DAGSTER_HOME": str(home),
           **provider_env(sandbox.base_urls, rates, latency_ms)}
    env.pop("CTI_EXECUTOR", None)  # the production default: multiprocess
    sandbox.reset()
    load_before = os.getloadavg()
    launched = launch(DAY, env, folder / f"materialize-{n}.log")
    load_after = os.getloadavg()
    by_status = sandbox.by_status()
    seen = sandbox.calls()
    throttled = {p: int(by_status.get(p, {}).get("429", 0)) for p in JOB_PROVIDERS}
    admitted = {p: seen.get(p, 0) - throttled[p] for p in JOB_PROVIDERS}
    run, steps = run_events(home)
    bound, binding = quota_bound(admitted, rates)
    ordered_bound = phase_bound(admitted, rates)
    phase = lookup_phase(steps)
    run_wall = (run["end"] - run["start"]) if run["start"] and run["end"] else None
    in_scope = workload.expected_calls(workload.observables(n), JOB_PROVIDERS)
    connector_same_calls = sum(per_call[p] * admitted[p] for p in admitted if p in per_call)
    connector_all_in_scope = sum(per_call[p] * in_scope[p] for p in in_scope if p in per_call)
    lookup_wall = phase.get("lookup_wall_s")
    return {
        "n": n,
        "day": DAY,
        "run": {**run, **launched},
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "rates": rates,
        "sandbox_requests": seen,
        "sandbox_429": throttled,
        "sandbox_429_total": sum(throttled.values()),
        "admitted_calls": admitted,
        "in_scope_calls": in_scope,
        "quota_bound_s": round(bound, 3),
        "bound_provider": binding,
        "phase_bound_s": round(ordered_bound, 3),
        "ratio_lookups_phase_bound": (round(phase["lookup_wall_s"] / ordered_bound, 3)
                                      if phase.get("lookup_wall_s") and ordered_bound else None),
        **phase,
        "run_wall_s": round(run_wall, 3) if run_wall else None,
        "ratio_lookups": round(lookup_wall / bound, 3) if lookup_wall and bound else None,
        "ratio_run": round(run_wall / bound, 3) if run_wall and bound else None,
        "connector_same_calls_s": round(connector_same_calls, 1),
        "connector_all_in_scope_s": round(connector_all_in_scope, 1),
        "speedup_lookups": (round(connector_same_calls / lookup_wall, 2)
                            if lookup_wall else None),
        "speedup_run": round(connector_same_calls / run_wall, 2) if run_wall else None,
        "steps": step_rows(steps, run["start"] or 0.0),
    }


def measure(args, scratch: Path) -> dict:
    """Both sizes (args.job_sizes) through the job, after the connector model's sample."""
    from bench.sandbox_proc import SandboxProcess
    from cti_assets.cli import runs

    rates = job_rates({p: float(r) for p, r in args.rate_limits.items()})
    sizes = getattr(args, "job_sizes", None) or SIZES
    sample = getattr(args, "job_baseline_sample", None) or 100
    results: dict = {"latency_ms": args.latency_ms, "rates": rates, "sizes": {},
                     "executor": "multiprocess",
                     "max_concurrent_steps": settings.max_concurrent_steps()}
    with mock.patch.dict(os.environ):  # CTI_DATA_DIR, DAGSTER_HOME restored
        with SandboxProcess(args.latency_ms, rates) as sandbox:
            sandbox.configure({"daily_quota": {p: UNLIMITED_DAY for p in JOB_PROVIDERS}})
            print(f"  connector model on {sample} observables", flush=True)
            model = connector_per_call(sandbox, args.latency_ms, rates, sample)
            results["connector_model"] = model
            home = fresh_home(scratch / "home")
            os.environ["DAGSTER_HOME"] = str(home)
            os.environ["CTI_DATA_DIR"] = str(scratch / "pools-data")
            results["pools"] = runs.set_pool_limits()
            for n in sizes:
                print(f"  {n:,} observables through the job", flush=True)
                size = measure_size(n, sandbox, rates, args.latency_ms, scratch / f"n{n}",
                                    home, model["per_call_s"])
                results["sizes"][str(n)] = size
                print(f"    lookups {size.get('lookup_wall_s')} s, run {size['run_wall_s']} s, "
                      f"bound {size['quota_bound_s']} s ({size['bound_provider']}), "
                      f"429s {size['sandbox_429_total']}, load {size['load_after']}", flush=True)
    return results


def headline(result: dict) -> dict | None:
    """The largest size measured (the targets are set at 10,000)."""
    sizes = result.get("sizes") or {}
    return sizes[max(sizes, key=int)] if sizes else None


def section(result: dict) -> str:
    """The job-throughput part of results.md."""
    model = result["connector_model"]
    lines = [
        "## 1b. Throughput through the Dagster job",
        "",
        f"Whole days materialised by `dagster asset materialize` (every asset of the "
        f"`enrichment` graph) in its own process: the same definitions, the production "
        f"executor ({result['executor']}, {result['max_concurrent_steps']} steps at once), the "
        f"provider pools set as `cti-assets pools` sets them ({_pools(result)}), a real "
        f"DAGSTER_HOME with the repo's dagster.yaml; every provider of the job pointed at the "
        f"sandbox (own process) at {result['latency_ms']} ms latency enforcing the rates "
        "below; a fresh data directory (empty cache) per size. Lookup wall: first lookup step "
        "start to last lookup step end, from the run's step events; run wall: the run's start "
        "to its end. Quota bound: max over providers of the calls the sandbox admitted / rate. The "
        "expensive lookups start after triage, which reads every cheap lookup, so the job's own "
        "order allows no less than the slowest cheap provider's calls / rate plus the slowest "
        "expensive provider's (cheap then expensive bound).",
        "",
        "| Observables | Lookup wall (s) | Run wall (s) | Quota bound (s) | Lookups / bound | "
        "Run / bound | Cheap then expensive bound (s) | Lookups / that | Connector model (s) | "
        "Speed-up (lookups, run) | Sandbox 429s | CPU (s) | Load after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, s in sorted(result["sizes"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {int(n):,} | {s.get('lookup_wall_s')} | {s['run_wall_s']} | "
            f"{s['quota_bound_s']} ({s['bound_provider']}) | {s['ratio_lookups']} | "
            f"{s['ratio_run']} | {s.get('phase_bound_s')} | {s.get('ratio_lookups_phase_bound')} "
            f"| {s['connector_same_calls_s']:.0f} | {s['speedup_lookups']}x, "
            f"{s['speedup_run']}x | {s['sandbox_429_total']} | {s['run']['cpu_s']} | "
            f"{s['load_after'][0]} |")
    top = headline(result)
    if top:
        lines += ["", f"Per provider at {top['n']:,} observables:", "",
                  "| Provider | Rate (req/s) | In scope | Admitted | 429s | calls / rate (s) | "
                  "Step start-up (s) | Step body (s) |", "|---|---|---|---|---|---|---|---|"]
        for p in JOB_PROVIDERS:
            step = top["steps"].get(f"{p}{LOOKUP_SUFFIX}", {})
            rate = top["rates"][p]
            lines.append(f"| {p} | {rate:g} | {top['in_scope_calls'][p]} | "
                         f"{top['admitted_calls'][p]} | {top['sandbox_429'][p]} | "
                         f"{top['admitted_calls'][p] / rate:.2f} | {step.get('startup_s', '-')} "
                         f"| {step.get('body_s', '-')} |")
        if "cheap_phase_s" in top:
            lines += ["", f"Phases at {top['n']:,}: cheap lookups {top['cheap_phase_s']} s, "
                      f"last cheap lookup end to triage end {top['triage_launch_to_end_s']} s "
                      f"(triage body {top['triage_body_s']} s), expensive lookups "
                      f"{top['expensive_phase_s']} s after triage."]
        lines += _documented_defaults(top)
    lines += [
        "",
        f"Connector model: bench/baseline.py (one observable at a time, each provider in turn,"
        f" one blocking request each, no cache) measured on the first "
        f"{model['sample_observables']} observables over every provider of the job "
        f"({model['sample_wall_s']:.1f} s) and extrapolated per call: its seconds per call "
        "times the calls the job made (admitted at the sandbox), so both do the same lookups. "
        "A connector would look up every observable in scope with every provider (no triage): "
        + ", ".join(f"{int(n):,}: {s['connector_all_in_scope_s']:.0f} s"
                    for n, s in sorted(result["sizes"].items(), key=lambda kv: int(kv[0])))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _documented_defaults(top: dict) -> list[str]:
    """results.md's lines on what the order costs at the documented default quotas."""
    bounds = documented_quota_bounds(top["admitted_calls"])
    quota = bounds["quota_bound_s"]
    if not quota:
        return []
    lines = ["", f"The same {top['n']:,} observables' calls at the providers' documented "
             "default quotas (providers.config.DEFAULTS), computed, not measured: a call past a "
             "daily or monthly cap waits for a later day.", "",
             "| Provider | Default rate (req/s) | Cap | Calls | Sent today | Seconds |",
             "|---|---|---|---|---|---|"]
    for provider, row in sorted(bounds["providers"].items(), key=lambda kv: -kv[1]["seconds"]):
        cap = f"{row['cap']:,}" + (" (binds)" if row["binds"] else "") if row["cap"] else "-"
        lines.append(f"| {provider} | {row['rate']:g} | {cap} | {row['calls']:,} | "
                     f"{row['sent']:,} | {row['seconds']:,.0f} |")
    ordered, streamed = bounds["ordered_bound_s"], bounds["streamed_bound_s"]
    lines += ["", f"Quota bound {quota:,.0f} s; cheap then expensive {ordered:,.0f} s "
              f"({ordered / quota:.2f} of it); deciding each observable as soon as its cheap "
              f"answers are in, exact only where no cap binds, {streamed:,.0f} s "
              f"({streamed / quota:.2f} of it)."]
    return lines


def _pools(result: dict) -> str:
    pools = result.get("pools") or {}
    counts = Counter(pools.values())
    return ", ".join(f"{c} pools of {limit}" for limit, c in sorted(counts.items()))


if __name__ == "__main__":  # a quick look: python -m bench.jobthroughput 1000
    import argparse
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write every figure here too")
    cli = parser.parse_args()
    ns = argparse.Namespace(latency_ms=cli.latency_ms, rate_limits=workload.DEFAULT_RATE_LIMITS,
                            job_sizes=cli.sizes, job_baseline_sample=cli.sample)
    with tempfile.TemporaryDirectory(prefix="cti-jobbench-") as tmp:
        figures = measure(ns, Path(tmp))
    if cli.json:
        cli.json.write_text(json.dumps(figures, indent=1))
    for size in figures["sizes"].values():
        print(json.dumps({k: v for k, v in size.items() if k != "steps"}, indent=1))
