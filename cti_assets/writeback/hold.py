"""What the write-back holds back, and the write-back status of every observable of the day.

An observable every asked provider failed on has no evidence: its "unknown" verdict and score
would read in OpenCTI as if the providers had looked and found nothing. Such rows are held back
(status `held_back`, reason `no_provider_evidence`) and written by a later run once a provider
answers; when no provider answered anything all day, the whole day is held back. An observable
no provider was asked about (TLP above every provider's, no key, budget) and with no other
evidence (threat links) is not written either (`not_written`, reason `no_provider_asked`): a
score of 0 and `cti:unknown` would claim a look nobody took. Every row of
the day's scores gets a status here (`written`, `dry_run`, `held_back` or `not_written` with
the observable's own status as reason), so nothing leaves the write-back unaccounted for.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cti_assets.scoring.components import parse_components
from cti_assets.scoring.evidence import FAILED, NOT_ASKED, EvidenceSummary, evidence_states
from cti_assets.tables import (
    OBSERVABLE_OK,
    WRITEBACK_DRY_RUN,
    WRITEBACK_HELD_BACK,
    WRITEBACK_NO_EVIDENCE,
    WRITEBACK_NOT_ASKED,
    WRITEBACK_NOT_WRITTEN,
    WRITEBACK_WRITTEN,
)


@dataclass
class HoldPlan:
    """The scores to write, the ids held back, those nobody asked about and the day's
    evidence counts."""

    to_write: pd.DataFrame
    held_ids: frozenset[str]
    evidence: EvidenceSummary
    unasked_ids: frozenset[str] = frozenset()

    @property
    def day_held_back(self) -> bool:
        return self.evidence.hold_back


def plan_hold(scores: pd.DataFrame, merged: pd.DataFrame | None) -> HoldPlan:
    """Split the day's scores into those to write and those held back for lack of evidence.

    `merged` needs stix_id and the evidence providers' status/reason columns
    (scoring.evidence.status_columns); without it nothing is held back."""
    summary = EvidenceSummary()
    if merged is None or "stix_id" not in merged.columns:
        return HoldPlan(scores, frozenset(), summary)
    states = evidence_states(merged)
    summary.add(states)
    held = frozenset(merged.loc[(states == FAILED).to_numpy(), "stix_id"].astype(str))
    if summary.hold_back:
        held = frozenset(scores["stix_id"].astype(str))
    not_asked = set(merged.loc[(states == NOT_ASKED).to_numpy(), "stix_id"].astype(str))
    unasked = frozenset(_without_evidence(scores, not_asked) - held)
    kept_out = held | unasked
    to_write = scores[~scores["stix_id"].astype(str).isin(kept_out)] if kept_out else scores
    return HoldPlan(to_write, held, summary, unasked)


def _without_evidence(scores: pd.DataFrame, ids: set[str]) -> set[str]:
    """The accepted observables among `ids` whose score rests on no evidence at all."""
    if not ids or not {"components", "observable_status"} <= set(scores.columns):
        return set()
    stix_ids = scores["stix_id"].astype(str)
    accepted = (scores["observable_status"].astype("string") == OBSERVABLE_OK).fillna(False)
    empty = scores["components"].map(lambda items: not parse_components(items))
    chosen = stix_ids.isin(ids) & accepted & empty.astype(bool)
    return set(stix_ids[chosen])


def writeback_statuses(
    scores: pd.DataFrame, written_ids: set[str], held_ids: frozenset[str], dry_run: bool,
    unasked_ids: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """One row per score row: stix_id, writeback_status and reason (tables.WRITEBACK_COLUMNS)."""
    ids = scores["stix_id"].astype(str)
    observable_status = (scores["observable_status"].astype("string")
                         if "observable_status" in scores.columns
                         else pd.Series(pd.NA, index=scores.index, dtype="string"))
    done = WRITEBACK_DRY_RUN if dry_run else WRITEBACK_WRITTEN
    status = ids.map(lambda i: WRITEBACK_HELD_BACK if i in held_ids
                     else done if i in written_ids else WRITEBACK_NOT_WRITTEN)
    reason = pd.Series(pd.NA, index=scores.index, dtype="string")
    reason[status == WRITEBACK_HELD_BACK] = WRITEBACK_NO_EVIDENCE
    not_written = status == WRITEBACK_NOT_WRITTEN
    own = observable_status.where(observable_status != "ok").fillna("nothing_to_write")
    reason[not_written] = own[not_written]
    reason[not_written & ids.isin(unasked_ids)] = WRITEBACK_NOT_ASKED
    return pd.DataFrame({
        "stix_id": ids.astype("string").to_numpy(),
        "writeback_status": status.astype("string").to_numpy(),
        "reason": reason.to_numpy(),
    })
