"""`make bench`: every benchmark of the issue in one run, written to bench/results.{md,json}.

1. throughput against the quota bound, and the connector-model baseline side by side;
1b. the same through the Dagster job itself (multiprocess executor, pools), 1,000 and 10,000;
2. calls spent re-materialising partitions and in a 30-day backfill;
3. re-scoring a million observables from stored lookups (and 3M, 10M: growth);
4. latency from a new observable to its write-back with the sensor running;
5. write-back throughput to the OpenCTI double: pycti's sequential import against ours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from cti_assets import settings

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCHMARKS = ("throughput", "jobthroughput", "calls", "rescore", "latency", "writeback")


def parse_args(argv=None) -> argparse.Namespace:
    from bench import workload

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="observables for throughput "
                        "(1,000 by default; 10,000 as an option)")
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--rate-limits", type=json.loads,
                        default=dict(workload.DEFAULT_RATE_LIMITS),
                        help="JSON {provider: requests per second}")
    parser.add_argument("--baseline-sample", type=int, default=None, metavar="K",
                        help="run the baseline on K observables and extrapolate (labelled)")
    parser.add_argument("--mode", choices=("process", "thread"), default="process",
                        help="one process (default, like the job) or thread per provider")
    parser.add_argument("--job-sizes", type=int, nargs="+", default=[1_000, 10_000],
                        help="observables per day materialised through the Dagster job")
    parser.add_argument("--job-baseline-sample", type=int, default=100, metavar="K",
                        help="the job benchmark's connector model runs on K observables and is "
                        "extrapolated per call (labelled)")
    parser.add_argument("--rescore-n", type=int, default=1_000_000)
    parser.add_argument("--rescore-scale", type=int, nargs="*",
                        default=[3_000_000, 10_000_000],
                        help="further re-scoring sizes, to see how time and memory grow "
                        "(none: --rescore-scale with no value)")
    parser.add_argument("--rescore-batch-rows", type=int, default=settings.DEFAULT_BATCH_ROWS,
                        help="observables merged and scored at a time (CTI_BATCH_ROWS)")
    parser.add_argument("--rescore-repeat", type=int, default=3,
                        help="re-scoring runs; the median run's figures are reported")
    parser.add_argument("--latency-timeout-s", type=float, default=180.0)
    parser.add_argument("--writeback-n", type=int, default=10_000,
                        help="observables of the write-back day")
    parser.add_argument("--writeback-sample", type=int, default=1_000, metavar="K",
                        help="pycti's sequential import runs on the first K observables' "
                        "objects and is extrapolated by object count (labelled)")
    parser.add_argument("--writeback-latency-ms", type=float, default=30.0,
                        help="the OpenCTI double's time per request")
    parser.add_argument("--writeback-workers", type=int, nargs="+", default=None,
                        help="write-back workers to measure (default: CTI_WRITEBACK_WORKERS); "
                        "the last is the headline figure")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--update", action="store_true",
                        help="keep the other benchmarks' figures from the existing results.json")
    parser.add_argument("--out", type=Path, default=REPO / "bench",
                        help="folder of results.md and results.json")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write results.md again from results.json and "
                        "the current README and findings")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from bench import report

    unknown = set(args.rate_limits) - set(__import__("bench.workload").workload.API_PROVIDERS)
    if unknown:
        print(f"bench: unknown provider(s) in --rate-limits: {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 2
    if args.render:
        stored = args.out / "results.json"
        if not stored.exists():
            print(f"bench: --render needs {stored}, which does not exist", file=sys.stderr)
            return 2
        try:
            results = json.loads(stored.read_text())
        except (OSError, ValueError) as exc:
            print(f"bench: --render cannot read {stored}: {exc}", file=sys.stderr)
            return 2
        report.write(results, args.out, sections_of(results))
        print(f"bench: {args.out / 'results.md'} written from {stored}")
        return 0
    results: dict = {
        "machine": report.machine(),
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {"n": args.n, "latency_ms": args.latency_ms, "rate_limits": args.rate_limits,
                   "mode": args.mode, "rescore_n": args.rescore_n,
                   "rescore_scale": args.rescore_scale,
                   "rescore_batch_rows": args.rescore_batch_rows,
                   "rescore_repeat": args.rescore_repeat, "job_sizes": args.job_sizes,
                   "job_baseline_sample": args.job_baseline_sample},
    }
    previous = args.out / "results.json"
    earlier = json.loads(previous.read_text()) if previous.exists() else {}
    if args.update and previous.exists():
        kept = json.loads(previous.read_text())
        results["command"] = f"{kept.get('command')}, then {results['command']}"
        for name in ("throughput", "baseline", *BENCHMARKS[1:]):
            if name in kept and name not in args.only and not (
                    name == "baseline" and "throughput" in args.only):
                results[name] = kept[name]
    with tempfile.TemporaryDirectory(prefix="cti-bench-") as scratch:
        scratch_dir = Path(scratch)
        os.environ["CTI_DATA_DIR"] = str(scratch_dir / "data")
        if "throughput" in args.only:
            run_throughput(args, results, scratch_dir)
        if "jobthroughput" in args.only:
            run_module("jobthroughput", args, results, scratch_dir)
        if "calls" in args.only:
            run_module("calls", args, results, scratch_dir)
        if "rescore" in args.only:
            run_module("rescore", args, results, scratch_dir)
            carry_rescore_comparisons(results, earlier)
        if "latency" in args.only:
            run_module("latency", args, results, scratch_dir)
        if "writeback" in args.only:
            run_module("writeback", args, results, scratch_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, args.out, sections_of(results))
    print((args.out / "results.md").read_text())
    return 0


# Re-scoring figures that compare this code with an older checkout: bench/rescore_cost.py
# measures them against a tree of that commit, which `make bench` does not check out.
RESCORE_COMPARISONS = ("compared", "instructions")


def carry_rescore_comparisons(results: dict, earlier: dict) -> None:
    """Keep the previous results.json's comparisons with older code, marked as carried over."""
    rescore, before = results.get("rescore") or {}, earlier.get("rescore") or {}
    if "error" in rescore:
        return
    carried = [key for key in RESCORE_COMPARISONS if key not in rescore and key in before]
    for key in carried:
        rescore[key] = before[key]
    if carried:
        rescore["carried_from"] = before.get("carried_from") or earlier.get("command", "")


def sections_of(results: dict) -> list[str]:
    """The results.md sections of every benchmark present in `results`."""
    import importlib

    from bench import throughput

    sections = []
    if "throughput" in results:
        sections.append(throughput.section(results["throughput"], results.get("baseline")))
    for name in BENCHMARKS[1:]:
        if name not in results:
            continue
        if "error" in results[name]:
            sections.append(f"## {name}\n\nNot measured: {results[name]['error']}\n")
        else:
            sections.append(importlib.import_module(f"bench.{name}").section(results[name]))
    return sections + [_meaning()]


def _meaning() -> str:
    """The README's "What the figures mean" section, repeated under the figures."""
    readme = REPO / "bench" / "README.md"
    heading = "## What the figures mean"
    text = readme.read_text() if readme.exists() else ""
    meaning = heading + text.split(heading, 1)[1] if heading in text else ""
    findings = REPO / "bench" / "findings.md"
    return meaning + ("\n" + findings.read_text() if findings.exists() else "")


def run_throughput(args, results: dict, scratch: Path) -> None:
    from bench import baseline, throughput
    from bench.sandbox_proc import SandboxProcess

    rates = {p: float(r) for p, r in args.rate_limits.items()}
    with SandboxProcess(args.latency_ms, rates) as sandbox:
        print(f"throughput: {args.n} observables through the pipeline's lookups", flush=True)
        tp = throughput.measure(args.n, sandbox, rates, args.latency_ms,
                                scratch / "throughput", mode=args.mode)
        print(f"  wall {tp['wall_s']} s, quota bound {tp['quota_bound_s']} s", flush=True)
        print("baseline: the connector model, one request at a time", flush=True)
        started = time.perf_counter()
        bl = baseline.measure(args.n, sandbox, args.latency_ms, rates, args.baseline_sample)
        print(f"  {bl['wall_s']} s ({time.perf_counter() - started:.0f} s measured)", flush=True)
    results["throughput"], results["baseline"] = tp, bl


def run_module(name: str, args, results: dict, scratch: Path) -> None:
    import importlib

    module = importlib.import_module(f"bench.{name}")
    print(f"{name}:", flush=True)
    try:
        results[name] = module.measure(args, scratch / name)
    except Exception as exc:  # a benchmark that cannot run is reported, not hidden
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
