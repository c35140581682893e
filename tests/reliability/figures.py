"""Rewrite the figures tables of docs/reliability.md from one `make reliability` run.

`python -m tests.reliability.figures DIR DOC`: DIR holds `runner.md` (the runner-level table
tests/providers/test_reliability_figures.py writes), `faults.md` (the provider-fault table from
whole Dagster runs, tests/reliability/test_provider_faults.py) and `runs.jsonl` (one line per
whole-run scenario, tests/reliability/support.record_figure); each replaces the text between its
markers in DOC. A table whose file is missing is left as it was, and says so.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RUNNER = ("<!-- runner-figures:start -->", "<!-- runner-figures:end -->")
RUNS = ("<!-- run-figures:start -->", "<!-- run-figures:end -->")
FAULTS = ("<!-- fault-figures:start -->", "<!-- fault-figures:end -->")


def runs_table(lines: list[str]) -> str:
    rows = ["| scenario | test | figure |", "|---|---|---|"]
    for line in lines:
        row = json.loads(line)
        cells = [str(row[k]).replace("|", "/") for k in ("scenario", "test", "figure")]
        rows.append(f"| {cells[0]} | `{cells[1]}` | {cells[2]} |")
    return "\n".join(rows)


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    start, end = markers
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"markers {start} ... {end} not found")
    return pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text)


def main(argv: list[str]) -> int:
    directory, doc = Path(argv[0]), Path(argv[1])
    text = doc.read_text(encoding="utf-8")
    for name, markers in (("runner.md", RUNNER), ("faults.md", FAULTS)):
        table = directory / name
        if table.is_file():
            text = replace_between(text, markers, table.read_text(encoding="utf-8"))
        else:
            print(f"{table} missing: its table left as it was")
    runs = directory / "runs.jsonl"
    if runs.is_file():
        lines = [line for line in runs.read_text(encoding="utf-8").splitlines() if line.strip()]
        text = replace_between(text, RUNS, runs_table(lines))
    else:
        print(f"{runs} missing: whole-run table left as it was")
    doc.write_text(text, encoding="utf-8")
    print(f"wrote the figures of {directory} into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
