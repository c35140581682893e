"""Whether an observable has provider evidence, and whether a lookup's failures need attention.

A score built on no provider answer at all is a statement of ignorance, not a verdict: when
every provider that was asked about an observable failed (errors, or a circuit breaker that
deferred it), writing its "unknown, score 0" back would read as if the providers had cleared it.
This module decides, per row of merged_enrichment, which evidence state an observable is in,
and per lookups table, what share of the attempted lookups failed. The Dagster assets only
report these figures and act on `hold_back`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cti_assets.providers.base import (
    DEFER_UNAVAILABLE,
    DEFERRED,
    ERROR,
    NETWORK_CONTEXT,
    NOT_FOUND,
    OK,
)
from cti_assets.providers.fields import PROVIDER_FIELDS, column

# Providers whose answers are evidence (the offline network context is not a provider answer).
EVIDENCE_PROVIDERS = tuple(p for p in PROVIDER_FIELDS if p != NETWORK_CONTEXT)

# Evidence state of one observable.
ANSWERED = "answered"  # at least one provider answered (ok or not_found)
FAILED = "failed"  # no answer, and at least one provider that was asked failed
NOT_ASKED = "not_asked"  # no provider was asked (skipped, deferred by budget, rejected)
EVIDENCE_STATES = (ANSWERED, FAILED, NOT_ASKED)


def status_columns(providers: tuple[str, ...] = EVIDENCE_PROVIDERS) -> list[str]:
    """The merged_enrichment columns `evidence_states` reads."""
    return [column(p, name) for p in providers for name in ("status", "reason")]


def evidence_states(merged: pd.DataFrame) -> pd.Series:
    """ANSWERED, FAILED or NOT_ASKED for every row of a merged_enrichment frame (providers
    without columns in it count as not asked)."""
    answered = np.zeros(len(merged), dtype=bool)
    failed = np.zeros(len(merged), dtype=bool)
    for provider in EVIDENCE_PROVIDERS:
        status_name = column(provider, "status")
        if status_name not in merged.columns:
            continue
        status = merged[status_name].astype("string").fillna("")
        reason = merged.get(column(provider, "reason"), pd.Series(None, index=merged.index))
        reason = reason.astype("string").fillna("")
        answered |= status.isin([OK, NOT_FOUND]).to_numpy()
        failed |= ((status == ERROR) | ((status == DEFERRED) & (reason == DEFER_UNAVAILABLE))
                   ).to_numpy()
    states = np.where(answered, ANSWERED, np.where(failed, FAILED, NOT_ASKED))
    return pd.Series(states, index=merged.index, dtype="string", name="evidence")


@dataclass
class EvidenceSummary:
    """Counts of observables per evidence state, gathered slice by slice."""

    answered: int = 0
    failed: int = 0
    not_asked: int = 0

    def add(self, states: pd.Series) -> None:
        counts = states.value_counts()
        self.answered += int(counts.get(ANSWERED, 0))
        self.failed += int(counts.get(FAILED, 0))
        self.not_asked += int(counts.get(NOT_ASKED, 0))

    @property
    def without_evidence(self) -> int:
        """Observables no provider answered about, whatever the reason."""
        return self.failed + self.not_asked

    @property
    def hold_back(self) -> bool:
        """The whole day is held back: providers were asked, and none answered anything."""
        return self.failed > 0 and self.answered == 0

    def as_metadata(self) -> dict[str, int]:
        return {
            "observables_with_provider_evidence": self.answered,
            "observables_without_provider_evidence": self.without_evidence,
            "observables_failed_by_every_provider": self.failed,
            "observables_not_sent_to_any_provider": self.not_asked,
        }


@dataclass(frozen=True)
class ErrorRate:
    """Failed lookups over attempted ones (ok, not_found, error, deferred as unavailable)."""

    failed: int
    attempted: int

    @property
    def share(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    def passes(self, threshold: float) -> bool:
        """True while the share of failures stays at or under the threshold."""
        return self.share <= threshold


def error_rate(lookups: pd.DataFrame) -> ErrorRate:
    """The error rate of one provider's lookups table."""
    status = lookups["status"].astype("string").fillna("")
    reason = lookups["reason"].astype("string").fillna("") if "reason" in lookups.columns \
        else pd.Series("", index=lookups.index, dtype="string")
    failed = (status == ERROR) | ((status == DEFERRED) & (reason == DEFER_UNAVAILABLE))
    attempted = status.isin([OK, NOT_FOUND]) | failed
    return ErrorRate(failed=int(failed.sum()), attempted=int(attempted.sum()))
