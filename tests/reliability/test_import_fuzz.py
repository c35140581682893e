"""Fuzzed import files through the CLI's import (issue 20 item 7): 0 tracebacks, one clear line
and a non-zero exit for every bad file, and atomic: a refused file changes nothing in the store,
an accepted one writes every object it holds.

`cti-assets import` runs in process (its `main`, argument parsing included), one file per call,
on one store: 1,000 files, about 15 s. The big cases (a valid 100,000-object file, a 50 MB file
and the same truncated, about 40 s) run under `make reliability` (CTI_RELIABILITY=1) only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.fuzz_bundles import fuzzed_file
from tests.reliability.support import long_scenario, record_figure

FILES = 1000


def store_digest(data_dir: Path) -> str:
    path = data_dir / "store.sqlite"
    if not path.exists():
        return "absent"
    digest = hashlib.sha256()
    with sqlite3.connect(path) as connection:
        for stix_id, text in connection.execute("SELECT id, json FROM objects ORDER BY id"):
            digest.update(f"{stix_id}\0{text}\0".encode())
    return digest.hexdigest()


def stored_ids(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "store.sqlite") as connection:
        return {i for (i,) in connection.execute("SELECT id FROM objects")}


def cli_import(path: Path) -> tuple[int, str, str]:
    """`cti-assets import PATH` in process: exit status, stdout, stderr."""
    from cti_assets.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["import", str(path)])
        except SystemExit as leaving:  # argparse refusals
            code = leaving.code if isinstance(leaving.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def ids_in(content: bytes) -> set[str]:
    document = json.loads(content.decode("utf-8-sig"))
    return {o["id"] for o in document.get("objects", [])}  # a bundle may have none


def check_one(path: Path, data_dir: Path, outcomes: Counter) -> str:
    """Import one file and check the rules; the outcome's kind."""
    before = store_digest(data_dir)
    code, out, err = cli_import(path)
    assert "Traceback" not in out + err, f"{path.name}: traceback\n{err[-2000:]}"
    if code == 0:
        assert err == "", f"{path.name}: accepted with stderr {err!r}"
        missing = ids_in(path.read_bytes()) - stored_ids(data_dir)
        assert missing == set(), f"{path.name}: accepted but {len(missing)} objects not stored"
        outcomes["accepted"] += 1
        return "accepted"
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"{path.name}: {len(lines)} lines on stderr:\n{err[-2000:]}"
    assert code == 2, f"{path.name}: exit {code}"
    assert store_digest(data_dir) == before, f"{path.name}: refused but the store changed"
    # clear: names the file and says what is wrong in words, not as an exception class
    clear = str(path) in lines[0] and not re.match(r"cti-assets import: \w+(Error|Exception):",
                                                   lines[0])
    outcomes["refused" if clear else "refused, unclear"] += 1
    if not clear:
        print(f"unclear: {path.name}: {lines[0][:200]}")
    return "refused"


@pytest.mark.slow
def test_fuzzed_import_files(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CTI_DATA_DIR", str(data_dir))
    for name in ("CTI_SOURCE", "OPENCTI_URL", "CTI_OUTPUTS_BASE", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    outcomes: Counter = Counter()
    started = time.monotonic()
    for seed in range(FILES):
        path = tmp_path / f"fuzz-{seed:04d}.json"
        path.write_bytes(fuzzed_file(seed))
        check_one(path, data_dir, outcomes)
        path.unlink()
    wall = time.monotonic() - started
    assert outcomes["refused, unclear"] == 0, outcomes
    assert outcomes["accepted"] > FILES // 10 and outcomes["refused"] > FILES // 3, outcomes
    record_figure(f"{FILES} fuzzed import files (truncated, wrong types, missing fields, "
                  "duplicate ids, not UTF-8, not JSON, BOM, deep nesting, odd top levels)",
                  "tests/reliability/test_import_fuzz.py",
                  f"{outcomes['accepted']} accepted (every object stored), "
                  f"{outcomes['refused']} refused with one line naming the file and exit 2, "
                  f"0 tracebacks, 0 partial writes; {wall:.0f} s")


def _ipv4(n: int, **extra: object) -> dict:
    value = f"45.{87 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"
    return {"type": "ipv4-addr", "spec_version": "2.1",
            "id": f"ipv4-addr--{uuid.uuid5(uuid.NAMESPACE_URL, value)}", "value": value, **extra}


@pytest.mark.slow
@long_scenario("a 100,000-object file and two 50 MB files take a few minutes to import")
def test_big_import_files(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CTI_DATA_DIR", str(data_dir))
    for name in ("CTI_SOURCE", "OPENCTI_URL", "CTI_OUTPUTS_BASE", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    outcomes: Counter = Counter()
    figures = []

    many = tmp_path / "100k.json"
    many.write_text(json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}",
                                "objects": [_ipv4(n) for n in range(100_000)]}))
    started = time.monotonic()
    assert check_one(many, data_dir, outcomes) == "accepted"
    figures.append(f"100,000 objects ({many.stat().st_size / 2**20:.0f} MB): accepted, "
                   f"all stored, {time.monotonic() - started:.0f} s")

    padding = "p" * 25_000
    big = json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}",
                      "objects": [_ipv4(200_000 + n, x_padding=padding)
                                  for n in range(2_100)]}).encode()  # fmt: skip
    assert len(big) > 50 * 2**20
    truncated = tmp_path / "50mb-truncated.json"
    truncated.write_bytes(big[: len(big) - 1000])
    started = time.monotonic()
    assert check_one(truncated, data_dir, outcomes) == "refused"
    figures.append(f"50 MB truncated: refused in one line, store unchanged, "
                   f"{time.monotonic() - started:.0f} s")
    whole = tmp_path / "50mb.json"
    whole.write_bytes(big)
    started = time.monotonic()
    assert check_one(whole, data_dir, outcomes) == "accepted"
    figures.append(f"50 MB (2,100 objects): accepted, {time.monotonic() - started:.0f} s")
    assert outcomes["refused, unclear"] == 0
    record_figure("big import files", "tests/reliability/test_import_fuzz.py",
                  "; ".join(figures))
