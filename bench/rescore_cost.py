"""The re-score's cost by two trees of the code, in figures the machine's load does not move:
instructions executed (valgrind's callgrind) and CPU seconds of alternated runs.

Wall time on a shared 2-core machine varies by a fifth or more from run to run, so "no slower
than before" needs a measure that repeats. Each side is a tree of the code (an older commit
checked out with `git worktree add`, and this one); each writes its own stored history with its
own bench code and re-scores it with its own benchmark script (bench/rescore.py's `_TIMED`), in
its own directory so that it imports its own `cti_assets`.

    python -m bench.rescore_cost instructions --old /tmp/base [--n 100000] [--rows 10000]
    python -m bench.rescore_cost cpu --old /tmp/base [--n 1000000] [--rows 100000] [--repeat 3]

`instructions` runs each side's re-score once under `valgrind --tool=callgrind` (every thread's
instructions; the same inputs give the same count to a few parts in ten thousand, whatever
else runs on the machine) and once the interpreter with only the script's imports, so the
re-score's own count is the difference. `cpu` alternates the sides (old, new, old, new, ...)
each run under `flock /tmp/bench.lock`, and reports each run's wall time, user+system CPU of
the process (from its rusage) and the load average before it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = "/tmp/bench.lock"
_IMPORTS = ("from cti_assets.storage.parquet import FrameBatches, StoredTable\n"
            "from cti_assets.scoring.batched import ScoreSummary, merge_batches, score_batches\n")
_SCRIPT = ("import json, sys\nfrom pathlib import Path\nfrom bench import rescore\n"
           "rescore.write_history(Path(sys.argv[1]), int(sys.argv[2]))\n"
           "print(json.dumps([rescore._TIMED, rescore.DAY, ','.join(rescore.LOOKUP_PROVIDERS)]))")


def _python(tree: Path, code: str, *args: str, prefix: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess:
    """`python -c code args` run in `tree`, so that it imports that tree's code (`python -c`
    puts the working directory first on sys.path)."""
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True,
                          text=True, check=False, cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                               "HOME": os.environ.get("HOME", "/tmp")})


def _checked(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-800:]}")
    return done


def prepare(tree: Path, outputs: Path, n: int) -> list[str]:
    """The side's own history written by its own bench code; its timed script, day and
    providers."""
    done = _checked(_python(tree, _SCRIPT, str(outputs), str(n)), f"{tree}: history")
    return json.loads(done.stdout.strip().splitlines()[-1])


def instructions(tree: Path, code: str, *args: str, out: Path) -> int:
    """Instructions executed by `python -c code args` in `tree` (all threads)."""
    prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
    done = _checked(_python(tree, code, *args, prefix=prefix), f"{tree}: callgrind")
    found = re.findall(r"Collected\s*:\s*(\d+)", done.stderr)
    if not found:
        raise RuntimeError(f"{tree}: no instruction count in valgrind's output")
    return int(found[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("instructions", "cpu"))
    parser.add_argument("--old", type=Path, required=True, help="tree of the code compared to")
    parser.add_argument("--new", type=Path, default=REPO, help="tree compared (this one)")
    parser.add_argument("--n", type=int, help="observables (100,000 / 1,000,000)")
    parser.add_argument("--rows", type=int, help="CTI_BATCH_ROWS (n / 10)")
    parser.add_argument("--repeat", type=int, default=3, help="cpu: runs of each side")
    parser.add_argument("--scratch", type=Path, help="folder for histories (kept)")
    parser.add_argument("--only", choices=("old", "new"), help="instructions: one side only")
    args = parser.parse_args(argv)
    n = args.n or (100_000 if args.mode == "instructions" else 1_000_000)
    rows = args.rows or n // 10
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    if args.only:
        sides = {args.only: sides[args.only]}
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cti-cost-"))
    results: dict = {"mode": args.mode, "n": n, "rows": rows, "sides": {}}
    try:
        timed = {}
        for side, tree in sides.items():
            timed[side] = prepare(tree, scratch / side, n)
            commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, check=False).stdout.strip()
            results["sides"][side] = {"tree": str(tree), "commit": commit}
        if args.mode == "instructions":
            for side, tree in sides.items():
                script, day, providers = timed[side]
                total = instructions(tree, script, str(scratch / side), day, providers,
                                     str(rows), out=scratch / f"callgrind.{side}.out")
                imports = instructions(tree, _IMPORTS, out=scratch / f"callgrind.{side}.imp")
                results["sides"][side].update(
                    total=total, imports=imports, rescore=total - imports)
                print(side, results["sides"][side], flush=True)
        else:
            runs: dict[str, list[dict]] = {side: [] for side in sides}
            for _ in range(args.repeat):
                for side, tree in sides.items():
                    runs[side].append(cpu_run(tree, timed[side], scratch / side, rows))
                    print(side, runs[side][-1], flush=True)
            for side, side_runs in runs.items():
                results["sides"][side].update(
                    runs=side_runs,
                    median_cpu_s=statistics.median(r["cpu_s"] for r in side_runs),
                    median_wall_s=statistics.median(r["wall_s"] for r in side_runs))
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results))
    return 0


def cpu_run(tree: Path, timed: list[str], outputs: Path, rows: int) -> dict:
    """One re-score under the bench lock: its wall (imports excluded, as it reports it),
    user+system CPU of the process and of flock (microseconds), the load before."""
    script, day, providers = timed
    load = os.getloadavg()[0]
    command = ["flock", LOCK, sys.executable, "-c", script, str(outputs), day, providers,
               str(rows)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=tree, stdout=out, stderr=err,
                                   env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = status  # reaped here: Popen must not wait for it again
        out.seek(0), err.seek(0)
        if status:
            raise RuntimeError(f"{tree}: re-scoring failed: {err.read().strip()[-800:]}")
        reported = json.loads(out.read().strip().splitlines()[-1])
    return {"wall_s": round(reported["wall_s"], 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_gb": round(reported["maxrss_kb"] / 2**20, 2), "load": round(load, 2)}


if __name__ == "__main__":
    sys.exit(main())
