"""Merged enrichment, threat context and scores, with blocking checks before write-back.

The maths lives in `cti_assets.scoring`; these assets feed it the partition's tables, publish
lineage (which provider fields a score comes from) and refuse to pass on bad scores.
"""

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from cti_assets import settings
from cti_assets.defs.io import retried_if_replaced
from cti_assets.defs.lookups import CHEAP_API_PROVIDERS
from cti_assets.defs.metadata import (
    COLUMN_LINEAGE,
    merged_column_lineage,
    numeric,
    owners,
    row_count,
    schema_metadata,
    score_column_lineage,
    tags,
)
from cti_assets.defs.partitions import daily_partitions
from cti_assets.defs.resources import SourceResource
from cti_assets.providers import base
from cti_assets.scoring.batched import ScoreSummary, merge_lookup_columns
from cti_assets.scoring.context import MERGED_COLUMNS
from cti_assets.scoring.model import MODEL_VERSION
from cti_assets.sources.base import SourceError
from cti_assets.storage.parquet import FrameBatches, StoredTable

LOOKUP_ASSETS = ["network_context_lookups"] + [
    f"{p}_lookups" for p in CHEAP_API_PROVIDERS + base.EXPENSIVE_PROVIDERS
]
# Scores are expected at least daily (the daily schedule at 00:30 UTC, the sensor as observables
# arrive): warn after 25 hours without a new materialization, fail after 26. The daemon's
# freshness evaluation shows it on the asset.
SCORES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))

# The four blocking checks (ScoreSummary.checks computes them) and what each guarantees.
SCORE_CHECKS: dict[str, str] = {
    "score_in_range": "Blocks write-back unless every score and confidence is within 0-100 "
    "(or null for a rejected observable).",
    "one_row_per_observable": "Blocks write-back unless the scores hold exactly one row for "
    "each observable of merged_enrichment: none missing, none extra.",
    "no_duplicate_ids": "Blocks write-back if a STIX id appears twice in the scores.",
    "every_score_explained": "Blocks write-back if any row has an empty explanation.",
}


@dg.asset(
    partitions_def=daily_partitions,
    group_name="scoring",
    kinds={"pandas"},
    owners=owners("scoring"), tags=tags("scoring"),
    metadata=schema_metadata("merged_enrichment"),
    ins={
        "observables": dg.AssetIn("observables", metadata={"batched": True}),
        **{
            name: dg.AssetIn(name, metadata={
                "batched": True, "columns": merge_lookup_columns(name.removesuffix("_lookups"))})
            for name in LOOKUP_ASSETS
        },
    },
)
def merged_enrichment(**inputs: StoredTable) -> FrameBatches:
    """One row per observable of the partition (rejected ones included) with the status, raw
    digest and fields of every provider as `<provider>__<field>` columns. Built
    CTI_BATCH_ROWS observables at a time."""
    from cti_assets.scoring.batched import merge_batches

    lookups = {
        name.removesuffix("_lookups"): table
        for name, table in inputs.items()
        if name.endswith("_lookups")
    }
    from cti_assets.scoring.evidence import EvidenceSummary, evidence_states

    statuses: dict[str, Counter] = {provider: Counter() for provider in lookups}
    evidence = EvidenceSummary()
    rows = 0

    def counted() -> Iterator[pd.DataFrame]:
        nonlocal rows
        for merged in merge_batches(inputs["observables"], lookups, _batch_rows()):
            rows += len(merged)
            for provider, counts in statuses.items():
                counts.update(merged[f"{provider}__status"].dropna().astype(str).tolist())
            evidence.add(evidence_states(merged))
            yield merged

    return FrameBatches(counted(), metadata=lambda: {
        **row_count(rows),
        COLUMN_LINEAGE: merged_column_lineage(),
        "provider_statuses": dg.MetadataValue.json(
            {provider: dict(counts) for provider, counts in statuses.items()}),
        **evidence.as_metadata(),
    })


@dg.asset(
    partitions_def=daily_partitions,
    group_name="scoring",
    kinds={"pandas", "stix"},
    owners=owners("scoring"), tags=tags("scoring"),
    metadata=schema_metadata("threat_context"),
    ins={"merged_enrichment": dg.AssetIn(
        "merged_enrichment", metadata={"batched": True, "columns": MERGED_COLUMNS})},
)
def threat_context(
    context: dg.AssetExecutionContext,
    source: SourceResource,
    observables: pd.DataFrame,
    merged_enrichment: StoredTable,
) -> pd.DataFrame:
    """Threat actors, intrusion sets, campaigns and malware each observable is linked to in the
    source (directly or through indicators), plus provider-reported names matched to them."""
    from cti_assets.scoring.context import build_threat_context

    try:
        cti_source = source.get()
        ids = observables["stix_id"].tolist()
        internal = dict(zip(ids, observables["internal_id"].tolist(), strict=True))
        links = cti_source.threat_context(ids, internal) if ids else []
        entities = cti_source.threat_entities()
    except SourceError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    with retried_if_replaced():
        frame = build_threat_context(observables, links, entities,
                                     merged_enrichment.frames(_batch_rows()))
    context.add_output_metadata(
        {
            **row_count(len(frame)),
            "linked": int(frame["linked"].sum()) if len(frame) else 0,
            "known_entities": len(entities),
        }
    )
    return frame


class ScoringConfig(dg.Config):
    """Scoring run config: weights override those of CTI_SCORE_WEIGHTS, which override the
    defaults (see README, scoring model)."""

    weights: dict[str, float] = Field(default_factory=dict)
    score_policy: str = Field(
        default="keep_higher", description="keep_higher, replace or replace_if_higher_confidence"
    )


def _batch_rows() -> int:
    try:
        return settings.batch_rows()
    except ValueError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


def score_check_results(
    summary: ScoreSummary, merged: pa.Array | StoredTable
) -> list[dg.AssetCheckResult]:
    """The four blocking checks on the scores written, each with the evidence of its failure."""
    return [
        dg.AssetCheckResult(check_name=name, passed=passed, metadata=evidence)
        for name, (passed, evidence) in summary.checks(merged).items()
    ]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="scoring",
    kinds={"pandas"},
    owners=owners("scoring"), tags=tags("scoring"),
    metadata=schema_metadata("observable_scores"),
    code_version=f"model-{MODEL_VERSION}",
    freshness_policy=SCORES_FRESHNESS,
    ins={"merged_enrichment": dg.AssetIn(metadata={"batched": True})},
    check_specs=[
        dg.AssetCheckSpec(name, asset="observable_scores", blocking=True, description=text)
        for name, text in SCORE_CHECKS.items()
    ],
)
def observable_scores(
    config: ScoringConfig,
    merged_enrichment: StoredTable,
    threat_context: pd.DataFrame,
):
    """Score 0-100, confidence, verdict and the evidence behind each, per observable; the score
    policy decides what happens to a score already on the observable. Zero provider calls.
    Scored CTI_BATCH_ROWS observables at a time."""
    from cti_assets.scoring.batched import score_batches
    from cti_assets.scoring.weights import configured_weights

    try:
        weights = configured_weights(config.weights)
    except ValueError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    summary = ScoreSummary()
    batches = score_batches(merged_enrichment, threat_context, summary, weights,
                            config.score_policy, _batch_rows())

    def metadata() -> dict[str, object]:
        gathered = summary.metadata()
        return {
            **row_count(gathered["rows"]),
            **numeric("verdict_", gathered["verdicts"]),
            **numeric("score_", gathered["histogram"]),
            "top_scores": dg.MetadataValue.md(gathered["top_scores"]),
        }

    # The IO manager writes every slice before the checks below run, so the summary is whole.
    yield dg.Output(
        FrameBatches(batches, metadata=metadata),
        metadata={
            COLUMN_LINEAGE: score_column_lineage(),
            "score_policy": config.score_policy,
        },
    )
    yield from score_check_results(summary, merged_enrichment)
