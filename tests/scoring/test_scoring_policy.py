"""Score policy against existing scores: never a blind overwrite."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti_assets.scoring.policy import apply_score_policy


def _scores(rows):
    frame = pd.DataFrame(rows, columns=["score", "existing_score", "confidence",
                                        "existing_confidence"])
    for name in frame.columns:
        frame[name] = frame[name].astype("Int64")
    return frame


def test_keep_higher_keeps_an_existing_higher_score():
    out = apply_score_policy(_scores([(6, 100, 90, 50), (80, 40, 50, 50), (30, None, 50, None),
                                      (None, 70, 0, None), (50, 50, 50, 50)]))
    assert list(out["final_score"]) == [100, 80, 30, 70, 50]
    assert list(out["policy_action"]) == [
        "kept_existing", "raised", "set", "no_score", "kept_existing"
    ]


def test_replace_replaces_even_a_higher_score():
    out = apply_score_policy(_scores([(6, 100, 10, 90), (80, 40, 50, 50), (30, None, 50, None)]),
                             "replace")
    assert list(out["final_score"]) == [6, 80, 30]
    assert list(out["policy_action"]) == ["replaced", "replaced", "set"]


def test_replace_if_higher_confidence_decides_by_confidence():
    out = apply_score_policy(
        _scores([(6, 100, 90, 50), (6, 100, 40, 50), (6, 100, 90, None), (80, 40, 10, 90)]),
        "replace_if_higher_confidence",
    )
    assert list(out["final_score"]) == [6, 100, 100, 80]
    assert list(out["policy_action"]) == [
        "replaced_higher_confidence", "kept_existing", "kept_existing", "raised"
    ]


def test_without_an_existing_confidence_column_nothing_is_lowered():
    frame = _scores([(6, 100, 90, None)]).drop(columns=["existing_confidence"])
    out = apply_score_policy(frame, "replace_if_higher_confidence")
    assert out["final_score"].iloc[0] == 100


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown score policy 'overwrite'"):
        apply_score_policy(_scores([(1, 2, 3, 4)]), "overwrite")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 100)),
                          st.one_of(st.none(), st.integers(0, 100))), min_size=1, max_size=20))
def test_keep_higher_never_lowers_an_existing_score(pairs):
    out = apply_score_policy(_scores([(new, old, 50, 50) for new, old in pairs]))
    for (new, old), final in zip(pairs, out["final_score"], strict=True):
        if old is not None:
            assert final >= old
        if new is not None:
            assert final >= new
