"""A canary API key appears in no output, log, compute log, event log or database file after a
whole run with faults (issue 20 item 7).

Every keyed provider is given one unique key (the sandbox accepts only it), the run meets 5xx,
429, malformed JSON, HTML error pages and a 401, and then every file the installation wrote
(data directory, Dagster home with its run, event-log and schedule databases and compute logs)
and the run's own console output are searched for the key: as bytes, inside every Parquet
value, inside every SQLite value (zlib-compressed cache bodies decompressed), and base64-encoded.
"""

from __future__ import annotations

import base64
import sqlite3
import uuid
import zlib
from pathlib import Path

import pytest

from cti_assets.sandbox import ProviderSandbox
from tests.reliability.support import KEYED, Site, long_scenario, public_ips, record_figure

FAULTS = {"abuseipdb": ("http_500", 3), "greynoise": ("malformed_json", 2),
          "shodan_internetdb": ("http_502", 2), "virustotal": ("http_429", 2),
          "securitytrails": ("html_error", 2), "shodan": ("http_401", 1)}  # fmt: skip


def _sqlite_values(path: Path) -> list[bytes]:
    values: list[bytes] = []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            tables = [t for (t,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in connection.execute(f'SELECT * FROM "{table}"'):  # noqa: S608
                    for value in row:
                        if isinstance(value, bytes):
                            values.append(value)
                            try:
                                values.append(zlib.decompress(value))
                            except zlib.error:
                                pass
                        elif isinstance(value, str):
                            values.append(value.encode())
    except sqlite3.DatabaseError:
        pass  # not a database after all: its bytes were searched
    return values


def _parquet_values(path: Path) -> list[bytes]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [repr(table.to_pylist()).encode(), repr(table.schema.metadata).encode()]


def files_with(secret: str, roots: list[Path]) -> tuple[list[str], int]:
    """Files whose content holds the secret in any searched form; and how many were searched."""
    forms = [secret.encode(), base64.b64encode(secret.encode()),
             base64.b64encode(secret.encode()).rstrip(b"=")]  # fmt: skip
    found, searched = [], 0
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            searched += 1
            contents = [path.read_bytes()]
            if path.suffix == ".parquet":
                contents += _parquet_values(path)
            elif contents[0].startswith(b"SQLite format 3"):
                contents += _sqlite_values(path)
            if any(form in content for content in contents for form in forms):
                found.append(str(path.relative_to(root)))
    return found, searched


def test_the_search_finds_a_planted_key(tmp_path):
    """The search itself: a key inside a compressed cache body and a Parquet value is found."""
    import pandas as pd

    secret = f"canary-{uuid.uuid4().hex}"
    with sqlite3.connect(tmp_path / "cache.sqlite") as connection:
        connection.execute("CREATE TABLE raw_bodies (body BLOB)")
        connection.execute("INSERT INTO raw_bodies VALUES (?)",
                           (zlib.compress(f'{{"k": "{secret}"}}'.encode()),))
    pd.DataFrame({"message": [f"x {secret} y"] * 50}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "clean.log").write_text("nothing here")
    found, searched = files_with(secret, [tmp_path])
    assert sorted(found) == ["cache.sqlite", "t.parquet"] and searched == 3


@pytest.mark.slow
@long_scenario("a whole-graph run with faults and a search of every file take about a minute")
def test_canary_key_in_no_file_or_log_after_a_run_with_faults(tmp_path):
    canary = f"CANARY{uuid.uuid4().hex}KEY"
    with ProviderSandbox() as sandbox:
        site = Site(tmp_path / "site", sandbox, key=canary)
        for provider in ("virustotal", "shodan", "abuseipdb", "greynoise", "securitytrails"):
            sandbox.set_key(provider, canary)
        site.import_values(public_ips(30, third_octet=85))
        for provider, (fault, count) in FAULTS.items():
            sandbox.inject(provider, fault, count)
        run = site.materialize("*", log_name="run.log")
        code = run.wait(timeout=280)
        console = (tmp_path / "site" / "run.log").read_text(errors="replace")
        assert code == 0, console[-3000:]
        seen = {r.status for r in sandbox.requests}
        assert {401, 429, 500, 502, 200} <= seen, seen  # the faults really happened
        assert len(KEYED) == 5
    compute_logs = list((tmp_path / "site").rglob("compute_logs/*.err"))
    assert compute_logs, "no compute log to search"
    found, searched = files_with(canary, [tmp_path / "site"])
    assert found == [], f"the API key is in {found}"
    record_figure("canary API key, whole-graph run with 5xx, 429, malformed JSON, HTML error, "
                  "401 faults", "tests/reliability/test_canary_key.py",
                  f"in 0 of {searched} files (outputs, caches, store, run/event-log/schedule "
                  "databases, compute logs, console output)")
