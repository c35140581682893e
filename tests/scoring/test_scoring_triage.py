"""Quota-aware triage of expensive lookups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cti_assets.scoring.triage import deferred_map, triage
from cti_assets.scoring.weights import ScoringWeights


def _prelim(n: int, *, entity_type: str = "IPv4-Addr", seed: int = 3, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "stix_id": [f"ipv4-addr--{i:04d}" for i in range(n)],
        "entity_type": entity_type,
        "observable_status": "ok",
        "score": pd.array(rng.integers(0, 100, n), dtype="Int64"),
        "confidence": pd.array(rng.integers(0, 100, n), dtype="Int64"),
        "verdict": "unknown",
        "special_use": False,
        "linked": False,
    })
    for name, values in columns.items():
        frame[name] = values
    return frame


def test_budget_of_ten_among_fifty_then_the_deferred_come_first():
    prelim = _prelim(50)
    first = triage(prelim, {"virustotal": 10})
    assert first["selected"].sum() == 10
    deferred = deferred_map(first, "virustotal")
    assert len(deferred) == 40 and set(deferred.values()) == {"budget"}
    chosen_first = set(first.loc[first["selected"], "stix_id"])
    assert chosen_first.isdisjoint(deferred)

    second = triage(prelim, {"virustotal": 10}, previously_deferred=set(deferred))
    chosen_second = set(second.loc[second["selected"], "stix_id"])
    assert len(chosen_second) == 10 and chosen_second <= set(deferred)
    assert set(second.loc[second["selected"], "reason"]) == {"previously_deferred"}
    # The deferred_map shape is accepted as previously_deferred too.
    third = triage(prelim, {"virustotal": 10}, previously_deferred=deferred)
    assert set(third.loc[third["selected"], "stix_id"]) == chosen_second


def test_priority_prefers_uncertain_urgent_and_linked_over_low_scores():
    prelim = _prelim(4, score=pd.array([5, 55, 95, 5], dtype="Int64"),
                     confidence=pd.array([90, 90, 90, 90], dtype="Int64"),
                     linked=[False, False, False, True])
    result = triage(prelim, {"virustotal": 3}).set_index("stix_id")
    assert not result.loc["ipv4-addr--0000", "selected"]
    assert result.loc["ipv4-addr--0000", "reason"] == "budget"
    assert result.loc["ipv4-addr--0001", "reason"] == "uncertain"
    assert result.loc["ipv4-addr--0002", "reason"] == "urgent"
    assert result.loc["ipv4-addr--0003", "reason"] == "urgent"


def test_non_candidates_and_confident_benign_are_visible_but_not_selected():
    prelim = _prelim(5, verdict=["unknown", "benign", "unknown", "unknown", "unknown"],
                     confidence=pd.array([50, 90, 50, 50, 50], dtype="Int64"),
                     special_use=[False, False, True, False, False],
                     observable_status=["ok", "ok", "ok", "rejected", "ok"],
                     entity_type=["IPv4-Addr"] * 4 + ["StixFile"])
    result = triage(prelim, {"virustotal": None, "shodan": None})
    vt = result[result["provider"] == "virustotal"].set_index("stix_id")["reason"].tolist()
    shodan = result[result["provider"] == "shodan"].set_index("stix_id")["reason"].tolist()
    assert vt[1:4] == ["not_selected", "special_use", "rejected"]
    assert shodan[4] == "out_of_scope"
    assert result.groupby("provider").size().to_dict() == {"shodan": 5, "virustotal": 5}
    assert deferred_map(result, "virustotal") == {"ipv4-addr--0001": "not_selected"}
    assert bool(result[result["provider"] == "virustotal"]["selected"].iloc[0])


def test_budget_zero_defers_everything_and_bad_budgets_are_refused():
    result = triage(_prelim(5), {"securitytrails": 0}, weights=ScoringWeights())
    assert result.empty or not result["selected"].any()  # IPs are out of scope for it
    assert triage(_prelim(5), {"virustotal": 0})["reason"].eq("budget").all()
    with pytest.raises(ValueError, match="expensive providers only"):
        triage(_prelim(5), {"abuseipdb": 3})
    with pytest.raises(ValueError, match="non-negative integer"):
        triage(_prelim(5), {"virustotal": -1})


def test_triage_is_deterministic():
    prelim = _prelim(30, score=pd.array([50] * 30, dtype="Int64"),
                     confidence=pd.array([50] * 30, dtype="Int64"))
    first = triage(prelim, {"virustotal": 7})
    pd.testing.assert_frame_equal(first, triage(prelim.iloc[::-1], {"virustotal": 7})
                                  .sort_values("stix_id").reset_index(drop=True))
    assert sorted(first.loc[first["selected"], "stix_id"]) == [
        f"ipv4-addr--{i:04d}" for i in range(7)
    ]
