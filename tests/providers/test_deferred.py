"""The deferred ledger: what triage kept back from an expensive provider, per provider and
partition, remembered across runs and processes until a lookup answers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from cti_assets import tables
from cti_assets.providers import base, deferred
from cti_assets.providers.deferred import DeferredLedger

DAY = "2026-11-20"
NEXT_DAY = "2026-11-21"


def lookups(*rows: tuple[str, str, str | None]) -> pd.DataFrame:
    """A lookup table (tables.LOOKUP_COLUMNS) of (stix_id, status, reason) rows."""
    records = [
        {"stix_id": sid, "entity_type": "IPv4-Addr", "normalized_value": sid.split("--")[-1],
         "provider": base.VIRUSTOTAL, "status": status, "reason": reason, "fields": "{}",
         "fetched_at": None, "raw_digest": None, "from_cache": False, "latency_ms": None,
         "http_status": None, "message": None}
        for sid, status, reason in rows
    ]
    frame = pd.DataFrame(records, columns=list(tables.LOOKUP_COLUMNS))
    frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True)
    return frame.astype(tables.LOOKUP_COLUMNS)


def stored_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT provider, stix_id, partition_key, reason FROM deferred "
            "ORDER BY provider, stix_id"
        ).fetchall()
    return rows


class Clock:
    """Stands in for deferred.datetime so that deferral times are chosen, not raced."""

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def now(self, tz=None):  # same signature as datetime.now
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    monkeypatch.setattr(deferred, "datetime", fake)
    return fake


@pytest.fixture
def ledger_path(tmp_path):
    return tmp_path / "ledger" / "deferred.sqlite"


@pytest.fixture
def ledger(ledger_path):
    ledger_path.parent.mkdir(parents=True)
    return DeferredLedger(ledger_path)


def test_default_ledger_lives_in_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    ledger = DeferredLedger()
    assert ledger.path == (tmp_path / "data" / "deferred.sqlite").resolve()
    assert ledger.path.exists()
    assert ledger.pending(base.VIRUSTOTAL) == {}
    assert ledger.counts() == {}


def test_only_deferred_rows_are_recorded_per_provider_and_partition(ledger, ledger_path):
    ledger.record(base.VIRUSTOTAL, DAY, lookups(
        ("ipv4-addr--a", base.DEFERRED, base.DEFER_BUDGET),
        ("ipv4-addr--b", base.OK, None),
        ("ipv4-addr--c", base.DEFERRED, base.DEFER_TRIAGE),
        ("ipv4-addr--d", base.SKIPPED, base.SKIP_TLP),
        ("ipv4-addr--e", base.ERROR, base.ERR_TRANSIENT),
        ("ipv4-addr--f", base.NOT_FOUND, None),
    ))
    ledger.record(base.SHODAN, NEXT_DAY, lookups(("ipv4-addr--x", base.DEFERRED,
                                                  base.DEFER_BUDGET)))

    assert set(ledger.pending(base.VIRUSTOTAL)) == {"ipv4-addr--a", "ipv4-addr--c"}
    assert set(ledger.pending(base.SHODAN)) == {"ipv4-addr--x"}
    assert ledger.pending(base.SECURITYTRAILS) == {}
    assert ledger.counts() == {base.VIRUSTOTAL: 2, base.SHODAN: 1}
    assert stored_rows(ledger_path) == [
        (base.SHODAN, "ipv4-addr--x", NEXT_DAY, base.DEFER_BUDGET),
        (base.VIRUSTOTAL, "ipv4-addr--a", DAY, base.DEFER_BUDGET),
        (base.VIRUSTOTAL, "ipv4-addr--c", DAY, base.DEFER_TRIAGE),
    ]


def test_pending_is_oldest_first_with_the_first_deferral_time(ledger, clock):
    first = clock.moment
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--z", base.DEFERRED,
                                                 base.DEFER_BUDGET)))
    clock.advance(3600)
    ledger.record(base.VIRUSTOTAL, NEXT_DAY, lookups(
        ("ipv4-addr--a", base.DEFERRED, base.DEFER_BUDGET),
        ("ipv4-addr--m", base.DEFERRED, base.DEFER_BUDGET),
    ))
    pending = ledger.pending(base.VIRUSTOTAL)
    # time first, then stix_id: z was deferred an hour before a and m
    assert list(pending) == ["ipv4-addr--z", "ipv4-addr--a", "ipv4-addr--m"]
    assert datetime.fromisoformat(pending["ipv4-addr--z"]) == first
    assert datetime.fromisoformat(pending["ipv4-addr--a"]) == clock.moment


def test_re_recording_is_idempotent_and_keeps_the_first_deferral(ledger, ledger_path, clock):
    table = lookups(("ipv4-addr--a", base.DEFERRED, base.DEFER_BUDGET),
                    ("ipv4-addr--b", base.DEFERRED, base.DEFER_BUDGET))
    ledger.record(base.VIRUSTOTAL, DAY, table)
    before = ledger.pending(base.VIRUSTOTAL)
    rows_before = stored_rows(ledger_path)

    clock.advance(86400)
    ledger.record(base.VIRUSTOTAL, DAY, table)
    # deferred again a day later for another reason: still one row, first time and reason kept
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", base.DEFERRED,
                                                 base.DEFER_TRIAGE)))
    assert ledger.pending(base.VIRUSTOTAL) == before
    assert stored_rows(ledger_path) == rows_before
    assert ledger.counts() == {base.VIRUSTOTAL: 2}


@pytest.mark.parametrize("answer", [base.OK, base.NOT_FOUND])
def test_an_answer_resolves_the_deferral(ledger, answer):
    ledger.record(base.VIRUSTOTAL, DAY, lookups(
        ("ipv4-addr--a", base.DEFERRED, base.DEFER_BUDGET),
        ("ipv4-addr--b", base.DEFERRED, base.DEFER_BUDGET),
    ))
    ledger.record(base.SHODAN, DAY, lookups(("ipv4-addr--a", base.DEFERRED,
                                             base.DEFER_BUDGET)))
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", answer, None)))
    assert set(ledger.pending(base.VIRUSTOTAL)) == {"ipv4-addr--b"}
    # an answer from one provider resolves nothing for another
    assert set(ledger.pending(base.SHODAN)) == {"ipv4-addr--a"}


@pytest.mark.parametrize(
    ("status", "reason"),
    [(base.ERROR, base.ERR_QUOTA), (base.ERROR, base.ERR_TRANSIENT),
     (base.SKIPPED, base.SKIP_NO_KEY)],
)
def test_no_answer_keeps_the_deferral(ledger, status, reason):
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", base.DEFERRED,
                                                 base.DEFER_BUDGET)))
    first = ledger.pending(base.VIRUSTOTAL)
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", status, reason)))
    assert ledger.pending(base.VIRUSTOTAL) == first


def test_a_resolved_observable_can_be_deferred_again(ledger, clock):
    row = ("ipv4-addr--a", base.DEFERRED, base.DEFER_BUDGET)
    ledger.record(base.VIRUSTOTAL, DAY, lookups(row))
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", base.OK, None)))
    assert ledger.pending(base.VIRUSTOTAL) == {}
    clock.advance(60)
    ledger.record(base.VIRUSTOTAL, DAY, lookups(row))
    (when,) = ledger.pending(base.VIRUSTOTAL).values()
    assert datetime.fromisoformat(when) == clock.moment


def test_an_empty_table_changes_nothing(ledger):
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", base.DEFERRED,
                                                 base.DEFER_BUDGET)))
    ledger.record(base.VIRUSTOTAL, DAY, lookups())
    assert set(ledger.pending(base.VIRUSTOTAL)) == {"ipv4-addr--a"}


def test_two_ledgers_on_one_file_share_their_state(ledger, ledger_path):
    other = DeferredLedger(ledger_path)
    ledger.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", base.DEFERRED,
                                                 base.DEFER_BUDGET)))
    assert set(other.pending(base.VIRUSTOTAL)) == {"ipv4-addr--a"}
    other.record(base.VIRUSTOTAL, DAY, lookups(("ipv4-addr--a", base.OK, None),
                                               ("ipv4-addr--b", base.DEFERRED,
                                                base.DEFER_BUDGET)))
    assert set(ledger.pending(base.VIRUSTOTAL)) == {"ipv4-addr--b"}
    # opening an existing ledger neither wipes nor duplicates it
    assert DeferredLedger(ledger_path).counts() == {base.VIRUSTOTAL: 1}


def test_another_process_sees_and_updates_the_same_ledger(ledger, ledger_path):
    ledger.record(base.SHODAN, DAY, lookups(("ipv4-addr--mine", base.DEFERRED,
                                             base.DEFER_BUDGET)))
    script = textwrap.dedent(
        f"""
        import json, sys
        import pandas as pd
        from cti_assets import tables
        from cti_assets.providers.deferred import DeferredLedger

        ledger = DeferredLedger({str(ledger_path)!r})
        seen = ledger.pending("shodan")
        rows = [
            ("ipv4-addr--mine", "ok", None),
            ("ipv4-addr--theirs", "deferred", "budget"),
        ]
        frame = pd.DataFrame(
            [{{"stix_id": s, "status": st, "reason": r}} for s, st, r in rows],
            columns=list(tables.LOOKUP_COLUMNS),
        )
        ledger.record("shodan", {NEXT_DAY!r}, frame)
        print(json.dumps(sorted(seen)))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["ipv4-addr--mine"]'
    assert set(ledger.pending(base.SHODAN)) == {"ipv4-addr--theirs"}
    assert stored_rows(ledger_path) == [(base.SHODAN, "ipv4-addr--theirs", NEXT_DAY,
                                         base.DEFER_BUDGET)]
