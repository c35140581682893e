"""The machine a benchmark ran on, and results.md / results.json from the figures."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

TARGETS = {
    "throughput_ratio": ("wall / quota bound", "<=", 1.10),
    "speedup": ("baseline wall / pipeline wall", ">=", 20.0),
    "job_ratio": ("through the Dagster job at 10,000 observables: wall / quota bound", "<=",
                  1.15),
    "job_speedup": ("through the Dagster job: connector model / job wall", ">=", 25.0),
    "job_429": ("through the Dagster job: sandbox 429 answers", "<=", 0),
    "repeat_calls": ("provider calls when materialising the same partitions again", "<=", 0),
    "backfill_extra_calls": ("backfill calls above unique observables per TTL", "<=", 0),
    "rescore_wall_s": ("re-scoring 1,000,000 observables, seconds", "<=", 10.0),
    "rescore_peak_gb": ("re-scoring peak memory, GB", "<=", 2.0),
    "rescore_work": ("re-scoring instructions, this code / the code before issue 14", "<=", 1.0),
    "rescore_scale": ("re-scoring wall of the largest size / wall of 1M (10x the rows)", "<=",
                      10.5),
    "latency_median_s": ("new observable in the source -> written back, median of 5, s", "<=",
                         20.0),
    "latency_worst_s": ("new observable in the source -> written back, worst of 5, s", "<=",
                        30.0),
    "writeback_speedup": ("write-back: pycti sequential import wall / ours", ">=", 8.0),
    "writeback_lost_or_duplicated": ("write-back: objects lost or duplicated", "<=", 0),
}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("dagster", "pandas", "pyarrow", "requests", "pyrate-limiter"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def verdict(name: str, value) -> str:
    if value is None:
        return "NOT RUN"
    _, op, target = TARGETS[name]
    ok = value <= target if op == "<=" else value >= target
    return "PASS" if ok else "MISS"


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value}{unit}"


def figure_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) for the summary table."""
    tp = results.get("throughput") or {}
    bl = results.get("baseline") or {}
    calls = results.get("calls") or {}
    rescore = results.get("rescore") or {}
    latency = results.get("latency") or {}
    writeback = results.get("writeback") or {}
    speedup = (round(bl["wall_s"] / tp["wall_s"], 2)
               if tp.get("wall_s") and bl.get("wall_s") else None)  # fmt: skip
    results.setdefault("figures", {})["speedup"] = speedup
    repeat = calls.get("repeat", {}).get("calls_second_run")
    backfill = calls.get("backfill", {})
    extra = (backfill["calls"] - backfill["expected_calls"]
             if "calls" in backfill and "expected_calls" in backfill else None)
    label = " (extrapolated)" if bl.get("extrapolated") else ""
    rows = [
        ("Throughput: wall / quota bound", _fmt(tp.get("ratio_to_quota_bound")),
         "<= 1.10", verdict("throughput_ratio", tp.get("ratio_to_quota_bound"))),
        ("Speed-up over the connector model" + label, _fmt(speedup, "x"), ">= 20x",
         verdict("speedup", speedup)),
        *_job_rows(results.get("jobthroughput") or {}),
        ("Calls when materialising the same partitions again", _fmt(repeat), "0",
         verdict("repeat_calls", repeat)),
        ("30-day backfill: calls - unique observables per TTL", _fmt(extra), "0",
         verdict("backfill_extra_calls", extra)),
        ("Re-scoring 1M observables: wall", _fmt(rescore.get("wall_s"), " s"), "<= 10 s",
         verdict("rescore_wall_s", rescore.get("wall_s"))),
        ("Re-scoring 1M observables: peak memory", _fmt(rescore.get("peak_gb"), " GB"),
         "<= 2 GB", verdict("rescore_peak_gb", rescore.get("peak_gb"))),
        *_scaling_rows(rescore),
        ("Re-scoring: instructions executed, this code / before issue 14 (142dba5)",
         _fmt((rescore.get("instructions") or {}).get("ratio")), "<= 1.00",
         verdict("rescore_work", (rescore.get("instructions") or {}).get("ratio"))),
        ("Latency: new observable -> written back (sensor on), median of 5",
         _fmt(latency.get("median_s"), " s"), "<= 20 s",
         verdict("latency_median_s", latency.get("median_s"))),
        ("Latency: new observable -> written back (sensor on), worst of 5",
         _fmt(latency.get("worst_s", latency.get("latency_s")), " s"), "<= 30 s",
         verdict("latency_worst_s", latency.get("worst_s", latency.get("latency_s")))),
        *_writeback_rows(writeback),
    ]
    return rows


def _job_rows(job: dict) -> list[tuple[str, str, str, str]]:
    """Throughput through the Dagster job, for each size: lookups and whole run against the
    quota bound (the target is set at 10,000), speed-up over the connector model, 429s."""
    rows: list[tuple[str, str, str, str]] = []
    for n, size in sorted((job.get("sizes") or {}).items(), key=lambda kv: int(kv[0])):
        at = f"Job, {int(n):,} observables"
        bound_target = int(n) >= 10_000
        for what, key in (("lookups", "ratio_lookups"), ("whole run", "ratio_run")):
            rows.append((f"{at}: {what} wall / quota bound", _fmt(size.get(key)),
                         "<= 1.15" if bound_target else "(set at 10,000)",
                         verdict("job_ratio", size.get(key)) if bound_target else "-"))
        for what, key in (("lookups", "speedup_lookups"), ("whole run", "speedup_run")):
            rows.append((f"{at}: speed-up over the connector model, {what} (extrapolated per "
                         "call)", _fmt(size.get(key), "x"), ">= 25x",
                         verdict("job_speedup", size.get(key))))
        rows.append((f"{at}: sandbox 429s", _fmt(size.get("sandbox_429_total")), "0",
                     verdict("job_429", size.get("sandbox_429_total"))))
    return rows


def _writeback_rows(writeback: dict) -> list[tuple[str, str, str, str]]:
    """Write-back to the OpenCTI double: speed-up over pycti, objects lost or duplicated."""
    if "speedup" not in writeback:
        return []
    label = " (pycti extrapolated)" if writeback["sequential"].get("extrapolated") else ""
    wrong = writeback["lost"] + writeback["duplicated"]
    return [
        (f"Write-back {writeback['n']:,} observables at {writeback['latency_ms']:g} ms: speed-up"
         f" over pycti's sequential import, {writeback['workers']} workers{label}",
         _fmt(writeback["speedup"], "x"), ">= 8x",
         verdict("writeback_speedup", writeback["speedup"])),
        ("Write-back: objects lost or duplicated (every run and rerun)", _fmt(wrong), "0",
         verdict("writeback_lost_or_duplicated", wrong)),
    ]


def _scaling_rows(rescore: dict) -> list[tuple[str, str, str, str]]:
    """Re-scoring at the largest size: time against 1M, peak at every size."""
    scaling = rescore.get("scaling") or []
    if len(scaling) < 2:
        return []
    largest = scaling[-1]["n"]
    ratio, peak = rescore.get("largest_over_base"), rescore.get("peak_gb_every_size")
    return [
        (f"Re-scoring {largest / 1e6:g}M observables: wall / 1M wall", _fmt(ratio, "x"),
         "<= 10.5x", verdict("rescore_scale", ratio)),
        ("Re-scoring peak memory at every size (" + ", ".join(
            f"{size['n'] / 1e6:g}M" for size in scaling) + ")", _fmt(peak, " GB"), "<= 2 GB",
         verdict("rescore_peak_gb", peak)),
    ]


def write(results: dict, folder: Path, sections: list[str]) -> None:
    """results.json (every figure) and results.md (summary table, then each section)."""
    rows = figure_rows(results)
    results["summary"] = [dict(zip(("figure", "value", "target", "verdict"), r, strict=True))
                          for r in rows]  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    m = results["machine"]
    lines = [
        "# cti-assets benchmark results",
        "",
        f"Run {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, "
        f"Python {m['python']}, dagster {m['versions']['dagster']}, pandas "
        f"{m['versions']['pandas']} ({m['os']}). Command: `{results['command']}`.",
        "",
        "| Figure | Value | Target | Verdict |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        *sections,
    ]
    (folder / "results.md").write_text("\n".join(lines).rstrip() + "\n")
