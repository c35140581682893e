"""Proof that a speed change changed no output: the re-scoring of the same stored history by
another tree of the code (an older commit, checked out with `git worktree add`) and by this one,
compared table by table and column by column.

    python -m bench.same_output --old /tmp/perf-base [--n 100000] [--rows 30000]

The history is written once (this tree's bench code), copied for each side, and re-scored by
each side's own `cti_assets` in its own process (the benchmark's timed script). The merged
table and the scores must be equal value for value and type for type; the differing rows of
each column are printed, and the exit status is 1 when any differ.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench import rescore

REPO = Path(__file__).resolve().parent.parent
TABLES = (f"merged_enrichment-{rescore.DAY}.parquet", f"observable_scores-{rescore.DAY}.parquet")


def run_side(tree: Path, outputs: Path, rows: int) -> None:
    """This tree's timed re-score with `tree`'s cti_assets first on the path."""
    arguments = [rescore._TIMED, str(outputs), rescore.DAY, ",".join(rescore.LOOKUP_PROVIDERS),
                 str(rows)]
    # Run in the tree itself: `python -c` puts the working directory first on sys.path, before
    # PYTHONPATH, so from any other checkout the side would import that checkout's code.
    done = subprocess.run([sys.executable, "-c", *arguments], capture_output=True, text=True,
                          check=False, cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: re-scoring failed: {done.stderr.strip()[-800:]}")


def differences(old: pa.Table, new: pa.Table) -> dict[str, int]:
    """Column -> rows that differ (-1: missing on one side or of another type)."""
    out: dict[str, int] = {}
    for name in sorted(set(old.column_names) | set(new.column_names)):
        if name not in old.column_names or name not in new.column_names:
            out[name] = -1
            continue
        a, b = old.column(name).combine_chunks(), new.column(name).combine_chunks()
        if a.type != b.type or len(a) != len(b):
            out[name] = -1
            continue
        if a.equals(b):
            continue
        same = [a[i] == b[i] for i in range(len(a))]
        out[name] = same.count(False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="tree of the code compared to")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=30_000, help="CTI_BATCH_ROWS of both sides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cti-same-") as scratch:
        history = Path(scratch) / "history"
        rescore.write_history(history, args.n)
        sides = {"old": args.old.resolve(), "new": REPO}
        for side, tree in sides.items():
            shutil.copytree(history, Path(scratch) / side)
            run_side(tree, Path(scratch) / side, args.rows)
        failed = False
        for name in TABLES:
            old, new = (pq.read_table(Path(scratch) / side / name) for side in sides)
            diff = differences(old, new)
            schema_same = old.schema.equals(new.schema, check_metadata=True)
            print(f"{name}: {old.num_rows} rows, {old.num_columns} columns; "
                  f"schema {'equal' if schema_same else 'DIFFERS'}; "
                  f"columns differing: {diff or 'none'}")
            failed |= bool(diff) or not schema_same
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
