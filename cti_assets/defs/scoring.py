"""Merged enrichment, threat context and scores, with blocking checks before write-back.

The maths lives in `cti_assets.scoring`; these assets feed it the partition's tables, publish
lineage (which provider fields a score comes from) and refuse to pass on bad scores.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from cti_assets.defs.lookups import CHEAP_API_PROVIDERS
from cti_assets.defs.partitions import BACKFILL_POLICY, daily_partitions
from cti_assets.defs.resources import SourceResource
from cti_assets.providers import base
from cti_assets.sources.base import SourceError

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
    ins={"observables": dg.AssetIn("observables"), **{n: dg.AssetIn(n) for n in LOOKUP_ASSETS}},
)
def merged_enrichment(context: dg.AssetExecutionContext, **inputs) -> pd.DataFrame:
    """One row per observable of the partition (rejected ones included) with the status, raw
    digest and fields of every provider as `<provider>__<field>` columns."""
    from cti_assets.scoring.merge import merge_lookups

    lookups = {
        name.removesuffix("_lookups"): frame
        for name, frame in inputs.items()
        if name.endswith("_lookups")
    }
    merged = merge_lookups(inputs["observables"], lookups)
    statuses = {
        provider: {str(k): int(v) for k, v in merged[f"{provider}__status"].value_counts().items()}
        for provider in lookups
        if f"{provider}__status" in merged
    }
    context.add_output_metadata(
        {"rows": len(merged), "provider_statuses": dg.MetadataValue.json(statuses)}
    )
    return merged


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
        links = cti_source.threat_context(ids) if ids else []
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


def score_check_results(scores: pd.DataFrame, merged: pd.DataFrame) -> list[dg.AssetCheckResult]:
    """The four blocking checks on a scores table, each with the evidence of its failure."""
    valid = scores["score"].dropna()
    out_of_range = int(((valid < 0) | (valid > 100)).sum())
    conf = scores["confidence"].dropna()
    out_of_range += int(((conf < 0) | (conf > 100)).sum())
    missing = set(merged["stix_id"]) - set(scores["stix_id"])
    extra = set(scores["stix_id"]) - set(merged["stix_id"])
    duplicates = int(scores["stix_id"].duplicated().sum())
    unexplained = int(
        (scores["explanation"].isna() | (scores["explanation"].astype(str).str.strip() == "")).sum()
    )
    return [
        dg.AssetCheckResult(
            check_name="score_in_range",
            passed=out_of_range == 0,
            metadata={"out_of_range": out_of_range},
        ),
        dg.AssetCheckResult(
            check_name="one_row_per_observable",
            passed=not missing and not extra and len(scores) == len(merged),
            metadata={"missing": len(missing), "extra": len(extra), "rows": len(scores)},
        ),
        dg.AssetCheckResult(
            check_name="no_duplicate_ids",
            passed=duplicates == 0,
            metadata={"duplicates": duplicates},
        ),
        dg.AssetCheckResult(
            check_name="every_score_explained",
            passed=unexplained == 0,
            metadata={"unexplained": unexplained},
        ),
    ]


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name="scoring",
    kinds={"pandas"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="observable_scores", blocking=True) for name in SCORE_CHECKS
    ],
)
def observable_scores(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    merged_enrichment: pd.DataFrame,
    threat_context: pd.DataFrame,
):
    """Score 0-100, confidence, verdict and the evidence behind each, per observable; the score
    policy decides what happens to a score already on the observable. Zero provider calls."""
    from cti_assets.scoring.explain import histogram, top_table_markdown, verdict_counts
    from cti_assets.scoring.model import ScoringWeights, score_frame
    from cti_assets.scoring.policy import apply_score_policy

    weights = ScoringWeights.from_dict(config.weights) if config.weights else ScoringWeights()
    scores = apply_score_policy(
        score_frame(merged_enrichment, threat_context, weights), config.score_policy
    )
    yield dg.Output(
        scores,
        metadata={
            "rows": len(scores),
            "verdicts": dg.MetadataValue.json(verdict_counts(scores)),
            "histogram": dg.MetadataValue.json(histogram(scores)),
            "top_scores": dg.MetadataValue.md(top_table_markdown(scores, n=10)),
            "dagster/column_lineage": _column_lineage(),
            "score_policy": config.score_policy,
        },
    )
    yield from score_check_results(scores, merged_enrichment)
