"""`cti-assets explain`: a score's derivation read back from what one real materialisation of a
day against the provider sandbox stored, at no provider cost; clear one-line refusals when the
value or the day has no score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cti_assets.cli import main as cli
from cti_assets.cli.errors import CliError
from cti_assets.cli.explain import explain_value
from cti_assets.providers.base import ALL_PROVIDERS
from tests.cli.support import isolate, one_line, point_at_sandbox

DAY = "2026-11-20"
EMPTY_DAY = "2026-11-19"
pytestmark = pytest.mark.slow


@dataclass
class Scored:
    data_dir: Path
    sandbox: object
    scores: pd.DataFrame


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One day of the shipped sample, materialised once for the whole module."""
    from cti_assets.cli import demo, runs
    from cti_assets.sandbox import ProviderSandbox
    from cti_assets.storage.outputs import read_partition

    data_dir = tmp_path_factory.mktemp("explain") / "data"
    with pytest.MonkeyPatch.context() as mp, ProviderSandbox(port=0) as sandbox:
        isolate(mp, data_dir)
        point_at_sandbox(mp, sandbox)
        demo.import_sample((DAY,))
        result = runs.load_defs().resolve_job_def("enrichment").execute_in_process(
            partition_key=DAY, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )
        failures = [
            e.event_specific_data.error.to_string()
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_FAILURE
        ]
        assert result.success, failures
        yield Scored(data_dir, sandbox, read_partition("observable_scores", DAY))


@pytest.fixture
def env(scored, monkeypatch):
    """The module's data directory again, for tests after one that moved it."""
    isolate(monkeypatch, scored.data_dir)
    scored.sandbox.reset_log()
    return scored


def top_row(scores: pd.DataFrame, entity_type: str | None = None) -> dict:
    rows = scores[scores["score"].notna() & scores["components"].map(
        lambda c: c is not None and len(c) > 0)]
    if entity_type:
        rows = rows[rows["entity_type"] == entity_type]
    assert len(rows), "the sample should score at least one such observable"
    return rows.sort_values(["score", "stix_id"], ascending=[False, True]).iloc[0].to_dict()


def lookup_rows(stix_id: str) -> dict[str, dict]:
    from cti_assets.storage.outputs import read_partition

    rows = {}
    for provider in ALL_PROVIDERS:
        frame = read_partition(f"{provider}_lookups", DAY)
        hit = frame[frame["stix_id"] == stix_id]
        if len(hit):
            rows[provider] = hit.iloc[0].to_dict()
    return rows


def section(text: str, title: str) -> list[str]:
    """The indented lines under a `title:` line."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        body.append(line)
    return body


def test_explain_prints_score_verdict_and_each_providers_evidence(env):
    from cti_assets.scoring.rules import PROVIDER_LABELS

    row = top_row(env.scores)
    text = explain_value(row["normalized_value"])
    header, headline = text.splitlines()[:2]
    assert f"partition {DAY}" in header and row["stix_id"] in header
    assert row["normalized_value"] in header
    assert row["verdict"] in headline and f"score {int(row['score'])}/" in headline
    assert f"confidence {int(row['confidence'])}" in headline
    assert row["explanation"] in text

    evidence = section(text, "Evidence (contribution in score points):")
    assert len(evidence) == len(row["components"])
    for item in row["components"]:
        assert any(f"{item['rule']}:" in line and f"{float(item['contribution']):+.1f}" in line
                   for line in evidence), item

    providers = section(text, "Providers:")
    lookups = lookup_rows(row["stix_id"])
    assert len(lookups) >= 2
    for provider, lookup in lookups.items():
        label = PROVIDER_LABELS.get(provider, provider)
        line = next(line for line in providers if line.strip().startswith(label))
        assert lookup["status"] in line

    # the raw answers behind the evidence, from the cache, by digest
    digests = {i["raw_digest"] for i in row["components"] if i.get("raw_digest")}
    assert digests and "Raw answers:" in text
    assert all(digest in text for digest in digests)
    assert env.sandbox.request_count() == 0  # read from storage only


def test_explain_finds_a_value_by_stix_id_and_by_a_differently_written_domain(env):
    row = top_row(env.scores, "Domain-Name")
    by_value = explain_value(row["normalized_value"], raw=False)
    assert explain_value(row["stix_id"], raw=False) == by_value
    assert explain_value(f"  {row['normalized_value'].upper()}. ", raw=False) == by_value
    assert "Raw answers:" not in by_value


def test_a_rejected_value_is_found_as_the_source_gave_it_with_the_reason(env):
    """The sample's CIDR range is rejected on intake: it has no normalised value, yet explain
    finds it as written and says why nothing was scored, rather than "not scored"."""
    from cti_assets.storage.outputs import read_partition

    observables = read_partition("observables", DAY)
    rejected = observables[observables["status"] == "rejected"].iloc[0]
    text = explain_value(f" {rejected['value']} ", raw=False)
    header, headline = text.splitlines()[:2]
    assert f"partition {DAY}" in header and rejected["stix_id"] in header
    assert rejected["value"] in header and headline.endswith(": no score")
    assert f"observable rejected: {rejected['reason']}" in text
    assert "\nWrite-back: not_written, rejected: nothing written (scored no_score" in text
    assert env.sandbox.request_count() == 0


def test_main_explain_prints_the_derivation_and_no_raw_leaves_answers_out(env, capsys):
    row = top_row(env.scores)
    assert cli.main(["explain", row["normalized_value"]]) == 0
    full = capsys.readouterr().out
    assert cli.main(["explain", row["normalized_value"], "--no-raw",
                     "--partition", DAY]) == 0
    short = capsys.readouterr().out
    assert row["stix_id"] in full and "Raw answers:" in full
    assert row["stix_id"] in short and "Raw answers:" not in short
    assert short.strip() == explain_value(row["normalized_value"], raw=False).strip()


def test_a_value_not_scored_says_which_partitions_were_searched(env, capsys):
    from cti_assets.storage.outputs import stored_partitions

    value = "never-imported-value.net"
    searched = stored_partitions("observable_scores")
    assert searched == [DAY]
    with pytest.raises(CliError) as error:
        explain_value(value)
    assert repr(value) in str(error.value) and f"{len(searched)} scored partition" in str(
        error.value)

    assert cli.main(["explain", value]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert captured.out == ""
    assert line == f"cti-assets explain: {error.value}"


def test_a_day_with_nothing_stored_is_named(env, capsys):
    row = top_row(env.scores)
    assert cli.main(["explain", row["normalized_value"], "--partition", EMPTY_DAY]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("cti-assets explain: ") and EMPTY_DAY in line
    assert captured.out == ""


def test_no_scores_at_all_is_one_clear_line(tmp_path, monkeypatch, capsys):
    isolate(monkeypatch, tmp_path / "empty-data")
    with pytest.raises(CliError) as error:
        explain_value("45.83.65.1")
    assert "nothing has been scored" in str(error.value)
    assert str(tmp_path / "empty-data") in str(error.value)  # says which data dir it searched
    assert not (tmp_path / "empty-data").exists()  # and creates none
    assert cli.main(["explain", "45.83.65.1"]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err) == f"cti-assets explain: {error.value}"
    assert captured.out == ""
