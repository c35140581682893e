"""Quota-aware triage: which observables get an expensive lookup today, and which wait.

The cheap providers (network_context, shodan_internetdb, greynoise, abuseipdb) give a
preliminary score. An expensive call (virustotal, securitytrails, shodan) is worth most where
that score is uncertain (middle band, low confidence) or urgent (high score, linked to a known
threat entity); observables already confidently benign are not worth one ("not_selected").
Within each provider's remaining budget the highest priorities win, observables deferred by an
earlier run first; the rest are deferred with reason "budget". Every decision is a row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cti_assets.providers.base import (
    DEFER_BUDGET,
    DEFER_TRIAGE,
    EXPENSIVE_PROVIDERS,
    SKIP_OUT_OF_SCOPE,
    SKIP_REJECTED,
    SKIP_SPECIAL_USE,
)
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.scoring.model import BENIGN
from cti_assets.scoring.weights import ScoringWeights
from cti_assets.tables import OBSERVABLE_OK, TRIAGE_COLUMNS

# Reasons of selected rows.
PREVIOUSLY_DEFERRED = "previously_deferred"
URGENT = "urgent"
UNCERTAIN = "uncertain"
LOW_PRIORITY = "low_priority"  # selected only because the budget allowed it
DEFERRED_REASONS = (DEFER_BUDGET, DEFER_TRIAGE)
# Added to the priority of previously deferred observables so they always come first.
_DEFERRED_BOOST = 10.0


def triage(
    prelim_scores: pd.DataFrame,
    budgets: dict[str, int | None],
    *,
    previously_deferred: set[str] | dict | None = None,
    weights: ScoringWeights | None = None,
) -> pd.DataFrame:
    """One row per (observable, provider in `budgets`): selected or not, priority and reason.

    `budgets` maps each expensive provider to triage to its remaining calls today (None:
    unlimited). `previously_deferred` is a set of stix_ids (for every provider), a dict
    provider -> stix_ids, or a `deferred_map`-style dict stix_id -> reason.
    Non-candidates are not selected with reason rejected / out_of_scope / special_use.
    """
    weights = weights or ScoringWeights()
    unknown = sorted(set(budgets) - set(EXPENSIVE_PROVIDERS))
    if unknown:
        raise ValueError(f"triage is for expensive providers only, got: {', '.join(unknown)}")
    for provider, budget in budgets.items():
        if budget is not None and (not isinstance(budget, int | np.integer) or budget < 0):
            raise ValueError(f"budget of {provider} must be a non-negative integer or None")
    frame = prelim_scores.reset_index(drop=True)
    stix_ids = frame["stix_id"].astype(object).to_numpy()
    score = _numbers(frame, "score", 0.0)
    confidence = _numbers(frame, "confidence", 0.0)
    linked = _flags(frame, "linked")
    verdict = frame["verdict"].astype(object).to_numpy() if "verdict" in frame else None
    priority = _priority(score, confidence, linked, weights)
    certain_benign = np.zeros(len(frame), dtype=bool)
    if verdict is not None:
        certain_benign = (verdict == BENIGN) & (
            confidence >= weights.triage_skip_benign_confidence
        )
    base_reason = np.where(
        linked | (score >= weights.malicious_threshold), URGENT,
        np.where(score >= weights.benign_max_score, UNCERTAIN, LOW_PRIORITY),
    ).astype(object)
    id_rank = np.empty(len(frame), dtype=np.int64)  # ties break by stix_id, computed once
    id_rank[np.argsort(stix_ids.astype(str), kind="stable")] = np.arange(len(frame))
    parts = []
    for provider in sorted(budgets, key=EXPENSIVE_PROVIDERS.index):
        deferred_ids = _deferred_ids(previously_deferred, provider)
        deferred_before = pd.Series(stix_ids, dtype=object).isin(deferred_ids).to_numpy()
        parts.append(_decide(frame, provider, budgets[provider], priority, deferred_before,
                             certain_benign, base_reason, id_rank))
    if not parts:
        return pd.DataFrame({name: [] for name in TRIAGE_COLUMNS})
    return pd.concat(parts, ignore_index=True)[list(TRIAGE_COLUMNS)]


def deferred_map(triage_df: pd.DataFrame, provider: str) -> dict[str, str]:
    """{stix_id: reason} of the observables the provider's lookup must defer this run."""
    mask = (
        (triage_df["provider"].to_numpy(dtype=object) == provider)
        & ~triage_df["selected"].to_numpy(dtype=bool)
        & triage_df["reason"].isin(DEFERRED_REASONS).to_numpy(dtype=bool)
    )
    ids = triage_df["stix_id"].to_numpy(dtype=object)[mask]
    reasons = triage_df["reason"].to_numpy(dtype=object)[mask]
    return dict(zip(ids.tolist(), reasons.tolist(), strict=True))


def _decide(
    frame: pd.DataFrame, provider: str, budget: int | None, priority: np.ndarray,
    deferred_before: np.ndarray, certain_benign: np.ndarray, base_reason: np.ndarray,
    id_rank: np.ndarray,
) -> pd.DataFrame:
    n_rows = len(frame)
    entity_type = frame["entity_type"].astype(object).to_numpy()
    status_ok = (
        frame["observable_status"].astype(object).to_numpy() == OBSERVABLE_OK
        if "observable_status" in frame else np.ones(n_rows, dtype=bool)
    )
    special = _flags(frame, "special_use")
    in_scope = np.isin(entity_type, PROVIDER_SCOPE[provider])
    candidate = status_ok & in_scope & ~special
    reason = np.select(
        [~status_ok, ~in_scope, special], [SKIP_REJECTED, SKIP_OUT_OF_SCOPE, SKIP_SPECIAL_USE],
        "",
    ).astype(object)
    provider_priority = priority + np.where(deferred_before, _DEFERRED_BOOST, 0.0)
    wanted = candidate & ~certain_benign
    reason[candidate & certain_benign] = DEFER_TRIAGE
    # Highest priority first; stix_id breaks ties so the choice is deterministic.
    order = np.lexsort((id_rank, -provider_priority))
    ranked = order[wanted[order]]
    limit = ranked.size if budget is None else min(int(budget), ranked.size)
    selected = np.zeros(n_rows, dtype=bool)
    selected[ranked[:limit]] = True
    reason[ranked[limit:]] = DEFER_BUDGET
    chosen = ranked[:limit]
    reason[chosen] = np.where(deferred_before[chosen], PREVIOUSLY_DEFERRED, base_reason[chosen])
    return pd.DataFrame({
        "stix_id": frame["stix_id"].astype("string").to_numpy(),
        "provider": provider,
        "selected": selected,
        "priority": np.round(np.where(candidate, provider_priority, 0.0), 6),
        "reason": reason,
    })


def _priority(score: np.ndarray, confidence: np.ndarray, linked: np.ndarray,
              weights: ScoringWeights) -> np.ndarray:
    """Higher for an uncertain middle score, a high score, a threat link, low confidence."""
    middle = (weights.suspicious_threshold + weights.malicious_threshold) / 2
    half_band = max(middle, 100 - middle)
    uncertainty = 1 - np.minimum(1, np.abs(score - middle) / half_band)
    return (
        weights.triage_uncertain_weight * uncertainty
        + weights.triage_urgency_weight * score / 100
        + weights.triage_link_weight * linked
        + weights.triage_low_confidence_weight * (1 - confidence / 100)
    )


def _deferred_ids(previously_deferred: set[str] | dict | None, provider: str) -> set[str]:
    if not previously_deferred:
        return set()
    if isinstance(previously_deferred, dict):
        if set(previously_deferred) & set(EXPENSIVE_PROVIDERS):
            return {str(s) for s in previously_deferred.get(provider) or ()}
        return {str(s) for s in previously_deferred}  # stix_id -> reason
    return {str(s) for s in previously_deferred}


def _numbers(frame: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), default)
    values = pd.to_numeric(frame[name], errors="coerce")
    return values.fillna(default).to_numpy(dtype=float)


def _flags(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[name].astype("boolean").fillna(False).to_numpy(dtype=bool)
