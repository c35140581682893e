"""The labelled evaluation set against the model, with the thresholds issue 14 set: no benign
infrastructure called malicious, no fresh attacker infrastructure called benign, and the
analyst's verdict on at least 95 % of the cases."""

from __future__ import annotations

import pytest

from cti_assets.providers.fields import PROVIDER_SCOPE
from tests.eval.cases import BANDS, BENIGN_INFRA, CASES, FRESH_MALICIOUS
from tests.eval.harness import evaluate, render, score_cases


@pytest.fixture(scope="module")
def report():
    return evaluate(score_cases())


def test_the_set_covers_every_observable_type_and_verdict():
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)
    types = {case.entity_type for case in CASES}
    assert types == set(PROVIDER_SCOPE["network_context"])
    assert {case.verdict for case in CASES} == set(BANDS)
    assert {case.group for case in CASES} >= {BENIGN_INFRA, FRESH_MALICIOUS}
    assert all(case.why for case in CASES)


def test_no_benign_infrastructure_is_called_malicious(report):
    assert report.benign_infra_malicious == [], render(report)


def test_no_fresh_malicious_infrastructure_is_called_benign(report):
    assert report.fresh_malicious_benign == [], render(report)


def test_the_analyst_verdict_agrees_on_at_least_95_percent(report):
    assert report.agreement >= 0.95, render(report)


def test_scores_fall_in_the_analyst_range_for_at_least_90_percent(report):
    assert report.in_range >= 0.90, render(report)


def test_every_case_was_parsed_by_its_provider_clients(report):
    statuses = report.table["provider_status"].astype(str)
    assert not statuses.str.contains("error").any(), statuses[statuses.str.contains("error")]
