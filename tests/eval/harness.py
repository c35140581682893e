"""Scores the labelled evaluation set (tests/eval/cases.py) and measures it against the analyst.

Each case's provider answers go through the real clients' classification and parsing, the
offline network context is computed as in a run, and the rows are merged and scored by the
production model. `python -m tests.eval.harness` (`make eval`) prints the confusion matrix,
precision and recall of malicious and benign, and the cases the model disagrees with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import pandas as pd

from cti_assets.providers import base
from cti_assets.providers.config import ProviderSettings
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.providers.http import HttpAnswer, ProviderClient
from cti_assets.providers.network_context import analyse
from cti_assets.providers.registry import CLIENTS
from cti_assets.scoring.merge import merge_lookups
from cti_assets.scoring.model import VERDICTS, score_frame
from tests.eval.answers import Http
from tests.eval.cases import BENIGN_INFRA, CASES, FRESH_MALICIOUS, Case
from tests.scoring.scoring_factories import Lookup, lookup_frame, observable, observables_frame


@cache
def _client(provider: str, paid: bool) -> ProviderClient:
    return CLIENTS[provider](ProviderSettings(name=provider, api_key="eval-key", paid=paid))


def parse(provider: str, entity_type: str, value: str, answer: Http) -> Lookup:
    """One provider answer as the client classifies and parses it."""
    client = _client(provider, answer.paid)
    outcome = client.classify(entity_type, value, HttpAnswer(
        answer.status, answer.headers, json.dumps(answer.body).encode(), 1.0))
    if outcome.status == base.OK:
        return Lookup("ok", client.complete_fields(outcome.fields))
    return Lookup(outcome.status, reason=outcome.reason)


def _lookups(case: Case) -> dict[str, Lookup]:
    context = analyse(case.entity_type, case.value)
    special = bool(context.get("is_special_use"))
    lookups = {base.NETWORK_CONTEXT: Lookup("ok", context)}
    for provider in CLIENTS:
        if case.entity_type not in PROVIDER_SCOPE[provider]:
            lookups[provider] = Lookup("skipped", reason=base.SKIP_OUT_OF_SCOPE)
        elif special:
            lookups[provider] = Lookup("skipped", reason=base.SKIP_SPECIAL_USE)
        elif provider in case.answers:
            lookups[provider] = parse(provider, case.entity_type, case.value,
                                      case.answers[provider])
        else:
            lookups[provider] = Lookup("skipped", reason=base.SKIP_NO_KEY)
    return lookups


def score_cases(cases: tuple[Case, ...] = CASES) -> pd.DataFrame:
    """One scored row per case, with the analyst's verdict, range and group beside it."""
    rows = []
    for index, case in enumerate(cases):
        row = observable(index, case.entity_type)
        row["value"] = row["normalized_value"] = case.value
        rows.append(row)
    observables = observables_frame(rows)
    types = dict(zip(observables["stix_id"], observables["entity_type"], strict=True))
    answers = [_lookups(case) for case in cases]
    frames = {
        provider: lookup_frame(provider, {row["stix_id"]: lookups[provider]
                                          for row, lookups in zip(rows, answers, strict=True)},
                               types)
        for provider in [base.NETWORK_CONTEXT, *CLIENTS]
    }
    scored = score_frame(merge_lookups(observables, frames))
    scored["case"] = [case.name for case in cases]
    scored["expected"] = [case.verdict for case in cases]
    scored["group"] = [case.group for case in cases]
    scored["low"] = [case.score_range[0] for case in cases]
    scored["high"] = [case.score_range[1] for case in cases]
    return scored


@dataclass
class Report:
    table: pd.DataFrame
    confusion: pd.DataFrame
    agreement: float
    in_range: float
    precision: dict[str, float]
    recall: dict[str, float]
    benign_infra_malicious: list[str]
    fresh_malicious_benign: list[str]


def evaluate(scored: pd.DataFrame) -> Report:
    expected, got = scored["expected"].astype(str), scored["verdict"].astype(str)
    confusion = pd.crosstab(pd.Categorical(expected, VERDICTS), pd.Categorical(got, VERDICTS),
                            rownames=["analyst"], colnames=["model"], dropna=False)
    precision, recall = {}, {}
    for verdict in ("malicious", "benign"):
        called, meant = got == verdict, expected == verdict
        precision[verdict] = (called & meant).sum() / max(called.sum(), 1)
        recall[verdict] = (called & meant).sum() / max(meant.sum(), 1)
    score = scored["score"].fillna(0).astype(int)
    return Report(
        table=scored, confusion=confusion, agreement=float((expected == got).mean()),
        in_range=float(((score >= scored["low"]) & (score <= scored["high"])).mean()),
        precision=precision, recall=recall,
        benign_infra_malicious=list(scored["case"][(scored["group"] == BENIGN_INFRA)
                                                   & (got == "malicious")]),
        fresh_malicious_benign=list(scored["case"][(scored["group"] == FRESH_MALICIOUS)
                                                   & (got == "benign")]),
    )


def render(report: Report) -> str:
    table = report.table
    lines = [f"{len(table)} cases; verdict agreement {report.agreement:.1%}; score in the "
             f"analyst's range {report.in_range:.1%}", "", report.confusion.to_string(), ""]
    for verdict in ("malicious", "benign"):
        lines.append(f"{verdict:9}: precision {report.precision[verdict]:.1%}, "
                     f"recall {report.recall[verdict]:.1%}")
    lines += [f"benign infrastructure called malicious: {len(report.benign_infra_malicious)} "
              f"{report.benign_infra_malicious}",
              f"fresh malicious infrastructure called benign: "
              f"{len(report.fresh_malicious_benign)} {report.fresh_malicious_benign}", ""]
    off = table[(table["verdict"].astype(str) != table["expected"])
                | (table["score"].fillna(0) < table["low"])
                | (table["score"].fillna(0) > table["high"])]
    for _, row in off.iterrows():
        lines.append(f"- {row['case']}: analyst {row['expected']} {row['low']}-{row['high']}, "
                     f"model {row['verdict']} {row['score']}: {row['explanation']}")
    return "\n".join(lines)


def main() -> None:
    print(render(evaluate(score_cases())))


if __name__ == "__main__":
    main()
