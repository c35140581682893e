"""Column lineage of the scores, read off the scoring code itself.

Which merged_enrichment columns a score depends on is whatever the rules and the confidence
model actually read, so this module does not keep a second list: it runs the rules, the
confidence model and the threat-link bonus once over a small synthetic merged frame (one row
per entity type, every provider answered, every field filled) that records each column read.
A rule that starts reading another field shows up in the lineage with no edit here.

`merged_lineage` then maps each merged column to where merge_lookups takes it from: the
observables' own columns, or the provider's lookups table (status, reason, ... and the typed
`<provider>__<field>` columns the lookup assets store), so the UI follows a score down to,
say, `virustotal_lookups.virustotal__malicious`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import cache
from typing import Any

import pandas as pd

from cti_assets.providers.base import OK, SKIP_NO_KEY, SKIPPED
from cti_assets.providers.fields import PROVIDER_FIELDS, PROVIDER_SCOPE, column
from cti_assets.scoring.merge import merged_columns
from cti_assets.tables import CONTEXT_COLUMNS, MERGED_LOOKUP_COLUMNS, OBSERVABLE_COLUMNS

MERGED = "merged_enrichment"
CONTEXT = "threat_context"
OBSERVABLES = "observables"

# Score columns copied from a merged column as they are (scoring.model's passthrough columns).
PASSTHROUGH = {"internal_id": "internal_id", "entity_type": "entity_type",
               "normalized_value": "normalized_value", "observable_status": "status",
               "tlp": "tlp", "existing_score": "existing_score"}

_SAMPLE_VALUES: dict[str, Any] = {
    "string": "x", "Int64": 1, "Float64": 1.0, "boolean": True, "list": [],
    "list[int]": [1], "list[str]": ["x"], "datetime64[ns, UTC]": pd.Timestamp("2026-01-01",
                                                                             tz="UTC"),
}


class _Recorder(pd.DataFrame):
    """A DataFrame that notes every column name read from it by item access."""

    _metadata = ["reads"]

    @property
    def _constructor(self) -> Callable[..., pd.DataFrame]:
        return pd.DataFrame  # derived frames are plain: only reads of this frame count

    def __getitem__(self, key: Any) -> Any:
        names = key if isinstance(key, list) else [key]
        self.reads.update(n for n in names if isinstance(n, str))
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        if isinstance(key, str):
            self.reads.add(key)
        return super().get(key, default)


def _recorder(frame: pd.DataFrame) -> _Recorder:
    recorder = _Recorder(frame)
    recorder.reads = set()
    return recorder


def _sample_merged() -> pd.DataFrame:
    """For each entity type any provider accepts: a row every provider answered with every
    field, and a row per provider that alone answered (so a rule that prefers one provider's
    answer to another's is seen reading both)."""
    types = sorted({t for scope in PROVIDER_SCOPE.values() for t in scope})
    rows: list[dict[str, Any]] = []
    for entity_type in types:
        for alone in (None, *PROVIDER_FIELDS):
            row: dict[str, Any] = {name: _SAMPLE_VALUES.get(dtype)
                                   for name, dtype in OBSERVABLE_COLUMNS.items()}
            row.update(stix_id=f"x--{len(rows)}", entity_type=entity_type, status=OK,
                       normalized_value="x.example.com", reason=None)
            for provider, fields in PROVIDER_FIELDS.items():
                answered = alone is None or provider == alone
                for meta, dtype in MERGED_LOOKUP_COLUMNS.items():
                    row[column(provider, meta)] = _SAMPLE_VALUES.get(dtype)
                row[column(provider, "status")] = OK if answered else SKIPPED
                row[column(provider, "reason")] = None if answered else SKIP_NO_KEY
                for name, dtype in fields.items():
                    row[column(provider, name)] = _SAMPLE_VALUES.get(dtype) if answered else None
            rows.append(row)
    return pd.DataFrame(rows)


def _sample_context(merged: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({name: [1] * len(merged) if name.startswith("n_") else
                         merged["stix_id"] if name == "stix_id" else [None] * len(merged)
                         for name in CONTEXT_COLUMNS})


@cache
def score_reads() -> dict[str, dict[str, tuple[str, ...]]]:
    """score column -> {upstream asset -> the columns of it that scoring reads for it}."""
    from cti_assets.scoring import model, rules
    from cti_assets.scoring.view import View
    from cti_assets.scoring.weights import ScoringWeights

    weights = ScoringWeights()
    sample = _sample_merged()

    def traced(run: Callable[[pd.DataFrame], object]) -> set[str]:
        frame = _recorder(sample)
        run(frame)
        return set(frame.reads)

    evidence = traced(lambda f: rules.evaluate(View(f), weights))
    confidence = traced(lambda f: model._confidence(View(f), weights))
    everything = traced(lambda f: model.score_frame(f, None, weights))
    context = _recorder(_sample_context(sample))
    model._links(View(sample), context)
    links = set(context.reads) - {"stix_id"}
    score = evidence | {"status"}
    existing = {"existing_score"} & everything

    def deps(merged: set[str], with_links: bool) -> dict[str, tuple[str, ...]]:
        out = {MERGED: tuple(sorted(merged - {"stix_id"}))}  # the join key is no input
        if with_links:
            out[CONTEXT] = tuple(sorted(links))
        return out

    passthrough = {name: deps({source}, False) for name, source in PASSTHROUGH.items()}
    return {
        **passthrough,
        "score": deps(score, True),
        "confidence": deps(confidence, False),
        "verdict": deps(score | confidence, True),
        "final_score": deps(score | existing, True),
        "components": deps(everything - existing - {"tlp", "internal_id"}, True),
        "explanation": deps(everything - existing - {"tlp", "internal_id"}, True),
    }


def merged_lineage() -> dict[str, tuple[str, str]]:
    """merged_enrichment column -> (upstream asset, column) it is copied from."""
    out: dict[str, tuple[str, str]] = {name: (OBSERVABLES, name) for name in OBSERVABLE_COLUMNS}
    for provider in PROVIDER_FIELDS:
        lookups = f"{provider}_lookups"
        for name in merged_columns(provider):
            meta = name.removeprefix(f"{provider}__")
            out[name] = (lookups, meta if meta in MERGED_LOOKUP_COLUMNS else name)
    return out


def score_lineage_reaches(score_column: str, asset: str, name: Hashable) -> bool:
    """Whether `score_column` depends, through merged_enrichment, on `asset`'s column."""
    sources = merged_lineage()
    return any(sources.get(merged) == (asset, name)
               for merged in score_reads()[score_column].get(MERGED, ()))
