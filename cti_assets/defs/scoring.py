"""Merged enrichment, threat context and scores, with blocking checks before write-back.

The maths lives in `cti_assets.scoring`; these assets feed it the partition's tables, publish
lineage (which provider fields a score comes from) and refuse to pass on bad scores.
"""

from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from cti_assets import settings
from cti_assets.defs.lookups import CHEAP_API_PROVIDERS
from cti_assets.defs.partitions import BACKFILL_POLICY, daily_partitions
from cti_assets.defs.resources import SourceResource
from cti_assets.providers import base
from cti_assets.scoring.batched import ScoreSummary, merge_lookup_columns
from cti_assets.sources.base import SourceError
from cti_assets.storage.parquet import FrameBatches, StoredTable

LOOKUP_ASSETS = ["network_context_lookups"] + [
    f"{p}_lookups" for p in CHEAP_API_PROVIDERS + base.EXPENSIVE_PROVIDERS
]
SCORE_CHECKS = (
    "score_in_range",
    "one_row_per_observable",
    "no_duplicate_ids",
    "every_score_explained",
)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name="scoring",
    kinds={"pandas"},
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
    statuses: dict[str, Counter] = {provider: Counter() for provider in lookups}
    rows = 0

    def counted() -> Iterator[pd.DataFrame]:
        nonlocal rows
        for merged in merge_batches(inputs["observables"], lookups, _batch_rows()):
            rows += len(merged)
            for provider, counts in statuses.items():
                counts.update(merged[f"{provider}__status"].dropna().astype(str).tolist())
            yield merged

    return FrameBatches(counted(), metadata=lambda: {
        "rows": rows,
        "provider_statuses": dg.MetadataValue.json(
            {provider: dict(counts) for provider, counts in statuses.items()}),
    })


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name="scoring",
    kinds={"pandas", "stix"},
)
def threat_context(
    context: dg.AssetExecutionContext,
    source: SourceResource,
    observables: pd.DataFrame,
    merged_enrichment: pd.DataFrame,
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
    frame = build_threat_context(observables, links, entities, merged_enrichment)
    context.add_output_metadata(
        {
            "rows": len(frame),
            "linked": int(frame["linked"].sum()) if len(frame) else 0,
            "known_entities": len(entities),
        }
    )
    return frame


class ScoringConfig(dg.Config):
    """Scoring run config: weights override the defaults (see README, scoring model)."""

    weights: dict[str, float] = Field(default_factory=dict)
    score_policy: str = Field(
        default="keep_higher", description="keep_higher, replace or replace_if_higher_confidence"
    )


def _column_lineage() -> dg.TableColumnLineage:
    from cti_assets.scoring.explain import column_lineage

    return dg.TableColumnLineage(
        deps_by_column={
            column: [
                dg.TableColumnDep(asset_key=dg.AssetKey(dep["asset"]), column_name=dep["column"])
                for dep in deps
            ]
            for column, deps in column_lineage().items()
        }
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
    backfill_policy=BACKFILL_POLICY,
    group_name="scoring",
    kinds={"pandas"},
    ins={"merged_enrichment": dg.AssetIn(metadata={"batched": True})},
    check_specs=[
        dg.AssetCheckSpec(name, asset="observable_scores", blocking=True) for name in SCORE_CHECKS
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
    from cti_assets.scoring.weights import ScoringWeights

    weights = ScoringWeights.from_dict(config.weights) if config.weights else ScoringWeights()
    summary = ScoreSummary()
    batches = score_batches(merged_enrichment, threat_context, summary, weights,
                            config.score_policy, _batch_rows())

    def metadata() -> dict[str, object]:
        gathered = summary.metadata()
        return {
            "rows": gathered["rows"],
            "verdicts": dg.MetadataValue.json(gathered["verdicts"]),
            "histogram": dg.MetadataValue.json(gathered["histogram"]),
            "top_scores": dg.MetadataValue.md(gathered["top_scores"]),
        }

    # The IO manager writes every slice before the checks below run, so the summary is whole.
    yield dg.Output(
        FrameBatches(batches, metadata=metadata),
        metadata={
            "dagster/column_lineage": _column_lineage(),
            "score_policy": config.score_policy,
        },
    )
    yield from score_check_results(summary, merged_enrichment)
