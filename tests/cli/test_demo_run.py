"""`cti-assets demo` end to end, its materialisation replaced by a stand-in that stores what a run
of each day would (observables, scores, lookups) for the observables the store holds that day:
--days checked before anything is written, the days run and scored those the sample is really
on (a later demo with other days included), the cache named only when it answered, and never
an empty score table shown as a result."""

from __future__ import annotations

import math
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from cti_assets import settings
from cti_assets.cli import demo
from cti_assets.cli import main as cli
from cti_assets.cli.errors import CliError
from cti_assets.storage.outputs import partition_path
from tests.cli.support import one_line

LAST = date.fromisoformat(demo.DEMO_DAYS[-1])


@pytest.fixture
def clean_environ():
    """The demo points the providers at its sandbox through os.environ: put it back after."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


class FakeRuns:
    """Stands in for cti_assets.cli.runs.materialise: for each day, the day's observables as the
    store holds them, a score each and one provider's lookups, answered from the cache or not."""

    def __init__(self, from_cache: bool = False) -> None:
        self.from_cache = from_cache
        self.days: list[str] = []

    def __call__(self, partition_keys) -> list[str]:
        from cti_assets.sources.local import LocalStixStore

        store = LocalStixStore()
        for key in partition_keys:
            self.days.append(key)
            start = datetime.fromisoformat(key).replace(tzinfo=UTC)
            records = store.observables_created_between(start, start + timedelta(days=1))
            observables = pd.DataFrame({"stix_id": [r.stix_id for r in records],
                                        "normalized_value": [r.value for r in records]})
            scores = observables.assign(
                entity_type=[r.entity_type for r in records], verdict="benign", score=10,
                confidence=50, explanation="stand-in score", observable_status="ok")
            lookups = observables.assign(from_cache=self.from_cache)
            for name, frame in (("observables", observables), ("observable_scores", scores),
                                ("greynoise_lookups", lookups)):
                path = Path(partition_path(name, key).path)
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.to_parquet(path)
        return []


def run_demo(capsys, monkeypatch, runs: FakeRuns, days: int) -> tuple[int, str, str]:
    monkeypatch.setattr(demo, "materialise", runs)
    code = demo.run_demo(sandbox_port=0, n_days=days)
    out, err = capsys.readouterr()
    return code, out, err


def write_empty_day(day: str, names=("observables", "observable_scores")) -> None:
    """A day's tables as a run of a day without observables stores them: no rows."""
    columns = ("stix_id", "entity_type", "normalized_value", "verdict", "score", "confidence",
               "explanation", "observable_status")
    for name in names:
        path = Path(partition_path(name, day).path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({c: pd.Series(dtype=object) for c in columns}).to_parquet(path)


def score_rows(out: str) -> int:
    """The rows of the printed score table (each row is followed by its explanation)."""
    return out.count("stand-in score")


@pytest.mark.parametrize(("days", "start", "most"), [
    (400, None, 325),
    (100000, None, 325),
    (10**9, None, 325),
    (8, "2026-11-15", 7),
])
def test_days_before_the_first_partition_are_one_line_and_nothing_is_written(
        capsys, data_dir, monkeypatch, days, start, most):
    if start:
        monkeypatch.setenv("CTI_PARTITIONS_START", start)
    first = start or "2026-01-01"
    assert (LAST - date.fromisoformat(first)).days + 1 == most
    code = cli.main(["demo", "--days", str(days)])
    out, err = capsys.readouterr()
    line = one_line(err)
    assert code == 2 and out == ""
    assert f"before the first partition, {first} (CTI_PARTITIONS_START)" in line
    assert line.endswith(f"--days is at most {most}")
    assert not data_dir.exists()  # nothing imported, not even the data directory


def test_the_largest_days_that_fit_are_accepted_and_start_on_the_first_partition(monkeypatch):
    monkeypatch.setenv("CTI_PARTITIONS_START", "2026-11-15")
    assert demo.checked_demo_days(7)[0] == "2026-11-15"


def test_a_demo_day_after_today_or_an_unreadable_start_is_refused(monkeypatch):
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    with pytest.raises(CliError, match=r"after today's partition"):
        demo.checked_demo_days(2, last=tomorrow)
    monkeypatch.setenv("CTI_PARTITIONS_START", "soon")
    refusal = r"^CTI_PARTITIONS_START must be a date, YYYY-MM-DD, got 'soon'$"
    with pytest.raises(settings.SettingsError, match=refusal):  # main() prints it as one line
        demo.checked_demo_days(2)


def test_a_fresh_demo_runs_the_days_asked_for_and_the_cache_is_not_claimed(
        capsys, data_dir, monkeypatch, clean_environ):
    runs = FakeRuns(from_cache=False)
    code, out, err = run_demo(capsys, monkeypatch, runs, 2)
    assert code == 0, err
    assert runs.days == list(demo.DEMO_DAYS)
    assert "already in the store" not in out
    calls = next(line for line in out.splitlines() if line.startswith("provider calls"))
    assert "cache" not in calls  # no lookup was answered from it
    assert score_rows(out) == 12


def test_a_rerun_names_what_the_cache_answered(capsys, data_dir, monkeypatch, clean_environ):
    run_demo(capsys, monkeypatch, FakeRuns(), 2)
    code, out, _ = run_demo(capsys, monkeypatch, FakeRuns(from_cache=True), 2)
    calls = next(line for line in out.splitlines() if line.startswith("provider calls"))
    sample = sum(len(pd.read_parquet(partition_path("observables", d).path))
                 for d in demo.DEMO_DAYS)
    assert code == 0 and calls.endswith(
        f"; {sample} lookup(s) answered from the response cache, at no call")


@pytest.mark.parametrize(("first", "then"), [(10, 2), (2, 10), (200, 2)],
                         ids=["10-then-2", "2-then-10", "200-then-2"])
def test_a_later_demo_with_other_days_scores_the_days_the_sample_is_on(
        capsys, data_dir, monkeypatch, clean_environ, first, then):
    """The store keeps an observable's first creation time, so the second demo cannot move the
    sample: it runs the days the sample is on and says so in one line, with every score."""
    before = FakeRuns()
    code, out, _ = run_demo(capsys, monkeypatch, before, first)
    assert code == 0
    on = FakeRuns()
    code, out, err = run_demo(capsys, monkeypatch, on, then)
    assert code == 0, err
    earlier = before.days  # the days the first demo put observables on
    assert on.days == earlier and set(earlier) != set(demo.demo_days(then))
    note = [line for line in out.splitlines() if "already in the store" in line]
    assert len(note) == 1 and f"scoring the {len(earlier)} day(s) they fall on" in note[0]
    assert "== Scores: benign" in out and score_rows(out) == 12


def test_more_days_than_observables_runs_the_days_that_get_some(
        capsys, data_dir, monkeypatch, clean_environ):
    runs = FakeRuns()
    code, out, _ = run_demo(capsys, monkeypatch, runs, 200)
    assert code == 0
    assert 0 < len(runs.days) < 200
    assert f"{200 - len(runs.days)} of the 200 days get none of the sample's" in out
    assert out.count("objects (") == len(runs.days)  # one import line a day that has objects


def test_a_day_without_scores_is_named_with_the_reason_not_shown_as_a_table(capsys, data_dir):
    day = demo.DEMO_DAYS[0]
    write_empty_day(day)
    assert demo.print_scores([day]) == 0
    out = capsys.readouterr().out
    assert "== Scores" not in out
    assert f"no scores for {day}: no observable in the store was created on that day" in out


def test_a_demo_without_any_score_fails(capsys, data_dir, monkeypatch, clean_environ):
    def no_scores(partition_keys):
        for key in partition_keys:
            write_empty_day(key, ("observable_scores",))
        return []

    monkeypatch.setattr(demo, "materialise", no_scores)
    assert demo.run_demo(sandbox_port=0) == 1
    out, err = capsys.readouterr()
    assert "== Scores" not in out
    assert "no scores for any of the demo's days" in err


def test_the_provider_calls_line_names_the_cache_only_with_a_count():
    assert demo.provider_calls_line(155, 0) == "provider calls this run: 155"
    assert demo.provider_calls_line(0, 83) == (
        "provider calls this run: 0; 83 lookup(s) answered from the response cache, at no call")
    assert not math.isnan(demo.cache_hits([]))


def test_the_table_counts_rejected_apart_and_shows_the_score_the_store_keeps(capsys, data_dir):
    day = "2026-11-20"
    scores = pd.DataFrame({
        "stix_id": ["ipv4-addr--1", "ipv4-addr--2", "file--3"],
        "entity_type": ["IPv4-Addr", "IPv4-Addr", "StixFile"],
        "normalized_value": ["45.83.12.7", None, "6fde" * 16],
        "observable_status": ["ok", "rejected", "ok"],
        "verdict": ["malicious", "unknown", "unknown"],
        "score": [73.0, None, 15.0], "confidence": [80.0, 0.0, 2.0],
        "final_score": pd.array([73, None, 95], dtype="Int64"),
        "policy_action": ["raised", "no_score", "kept_existing"],
        "explanation": ["malicious (73/100)", "unknown (no score): observable rejected: x",
                        "unknown (15/100)"]})
    path = Path(partition_path("observable_scores", day).path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(path)
    assert demo.print_scores([day]) == 3
    out = capsys.readouterr().out
    assert "== Scores: malicious 1, unknown 1, not scored (rejected) 1" in out
    assert "unknown (15/100) [the store keeps 95: kept_existing]" in out
    assert "malicious (73/100)\n" in out  # written as computed: no note
