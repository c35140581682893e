"""What to do with the score already on an observable: never a blind overwrite.

The anchors' VirusTotal connector replaced an AbuseIPDB 100 with a VirusTotal 6 because
"replace with lower score" defaulted to true. Here the policy is explicit and every row says
what it did (`policy_action`), so the write-back and the explanation can show it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEEP_HIGHER = "keep_higher"
REPLACE = "replace"
REPLACE_IF_HIGHER_CONFIDENCE = "replace_if_higher_confidence"
POLICIES = (KEEP_HIGHER, REPLACE, REPLACE_IF_HIGHER_CONFIDENCE)

SET = "set"  # no existing score: ours is written
KEPT_EXISTING = "kept_existing"  # the existing score stays (higher, equal, or more trusted)
RAISED = "raised"  # ours is higher than the existing one
REPLACED = "replaced"  # ours replaces a different existing score (policy "replace")
REPLACED_HIGHER_CONFIDENCE = "replaced_higher_confidence"  # ours is lower but more confident
NO_SCORE = "no_score"  # we have no score (rejected observable): nothing to write
ACTIONS = (SET, KEPT_EXISTING, RAISED, REPLACED, REPLACED_HIGHER_CONFIDENCE, NO_SCORE)


def apply_score_policy(scores: pd.DataFrame, policy: str = KEEP_HIGHER) -> pd.DataFrame:
    """Add `final_score` (Int64) and `policy_action` to a copy of `scores`.

    keep_higher: the higher of existing and new; never lowers an existing score.
    replace: the new score, whatever the existing one.
    replace_if_higher_confidence: a lower new score replaces the existing one only when our
    confidence is strictly higher than `existing_confidence`; a missing existing confidence
    (column absent or null) is unknown, so it falls back to keep_higher rather than assume 0.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown score policy {policy!r}; choose one of {', '.join(POLICIES)}")
    missing = {"score", "existing_score"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack column(s): {', '.join(sorted(missing))}")
    new = pd.to_numeric(scores["score"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    old = pd.to_numeric(scores["existing_score"], errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )
    has_new, has_old = ~np.isnan(new), ~np.isnan(old)
    higher = has_new & has_old & (new > old)
    lower = has_new & has_old & (new < old)
    if policy == REPLACE:
        replace_lower = lower
        lower_action = REPLACED
    elif policy == REPLACE_IF_HIGHER_CONFIDENCE:
        replace_lower = lower & _more_confident(scores)
        lower_action = REPLACED_HIGHER_CONFIDENCE
    else:
        replace_lower = np.zeros(len(scores), dtype=bool)
        lower_action = KEPT_EXISTING
    take_new = (has_new & ~has_old) | higher | replace_lower
    final = np.where(take_new, new, old)
    action = np.select(
        [~has_new, ~has_old, higher, replace_lower],
        [NO_SCORE, SET, RAISED, lower_action],
        KEPT_EXISTING,
    ).astype(object)
    if policy == REPLACE:
        action[higher] = REPLACED
    out = scores.copy()
    out["final_score"] = scores_as_int64(final)
    out["policy_action"] = pd.array(action, dtype="string")
    return out


def scores_as_int64(values: np.ndarray, missing: np.ndarray | None = None
                    ) -> pd.arrays.IntegerArray:
    """Scores (floats, NaN for none) as Int64, null also where `missing`; whole numbers go
    straight from the arrays, anything else through pandas' checked conversion, which refuses
    fractions."""
    missing = np.isnan(values) if missing is None else missing | np.isnan(values)
    whole = np.where(missing, 0, values)
    if np.array_equal(whole, np.floor(whole)) and np.abs(whole).max(initial=0) < 2**53:
        return pd.arrays.IntegerArray(whole.astype(np.int64), missing)
    objects = values.astype(object)
    objects[missing] = None
    return pd.array(objects, dtype="Int64")


def _more_confident(scores: pd.DataFrame) -> np.ndarray:
    if "existing_confidence" not in scores.columns or "confidence" not in scores.columns:
        return np.zeros(len(scores), dtype=bool)
    ours = pd.to_numeric(scores["confidence"], errors="coerce").to_numpy(float, na_value=np.nan)
    theirs = pd.to_numeric(scores["existing_confidence"], errors="coerce").to_numpy(
        float, na_value=np.nan
    )
    return ~np.isnan(ours) & ~np.isnan(theirs) & (ours > theirs)


def decided_again(scores: pd.DataFrame, current: dict[str, int],
                  policy: str = KEEP_HIGHER) -> pd.DataFrame:
    """The rows with `existing_score` set to the score the source holds now (`current`, by
    stix_id; none where absent) and the policy applied again: what a write-back writes when
    an analyst, or an earlier write-back, changed a score after the observables were read (a
    re-score reads no observables)."""
    fresh = scores.copy()
    fresh["existing_score"] = pd.array(
        [current.get(stix_id) for stix_id in fresh["stix_id"].astype(str)], dtype="Int64")
    return apply_score_policy(fresh, policy)
