"""Write-back: one STIX 2.1 bundle per partition, sent once and only once.

Deterministic ids make the write an upsert: a rerun, or a resend after a failure halfway,
updates what is there and creates nothing new. Retries: each OpenCTI call is retried by the
source (OPENCTI_MAX_ATTEMPTS = 4 attempts); objects still failing fail the step, and
WRITEBACK_RETRY reruns it (3 step attempts), so one object is attempted at most 4 x 3 = 12
times. Derived objects carry the source observable's markings. Timestamps come from the
evidence (the lookups' fetched_at, read from merged_enrichment), never from the run's clock;
the clock only leaves out indicators already expired. `dry_run` writes the bundle under
CTI_DATA_DIR instead of sending it. Observables every asked provider failed on are held back,
and a day on which no provider answered at all sends nothing (writeback.hold); the stored
table says what happened to each observable.
"""

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from cti_assets import settings
from cti_assets.defs.metadata import numeric, owners, row_count, schema_metadata, tags
from cti_assets.defs.partitions import daily_partitions
from cti_assets.defs.resources import SourceResource
from cti_assets.scoring.evidence import status_columns
from cti_assets.sources.base import SourceError
from cti_assets.writeback.hold import HoldPlan, plan_hold, writeback_statuses
from cti_assets.writeback.timing import FETCHED_AT_COLUMNS

# Whole-step retries only (the platform calls inside a step are retried by the source).
WRITEBACK_RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)


class WritebackRunConfig(dg.Config):
    """Write-back run config."""

    dry_run: bool = Field(default=False, description="Write the bundle to disk, send nothing")
    indicator_threshold: int = Field(default=70, description="Indicator for malicious >= this")
    confidence: int = Field(
        default=75, description="Confidence of what we write (0-100), like a connector's level")


def partition_bundle(
    scores: pd.DataFrame,
    context_frame: pd.DataFrame,
    observables: pd.DataFrame,
    merged: pd.DataFrame | None,
    written_at: datetime,
    indicator_threshold: int = 70,
    confidence: int = 75,
    plan: HoldPlan | None = None,
) -> dict:
    """The bundle of one partition, dated by its evidence (`merged`'s fetched_at columns),
    without the observables held back for lack of provider evidence, nor those no provider
    was asked about and with no other evidence (writeback.hold)."""
    from cti_assets.writeback.bundle import WritebackConfig, build_bundle
    from cti_assets.writeback.timing import scored_at

    plan = plan or plan_hold(scores, merged)
    config = WritebackConfig(indicator_threshold=indicator_threshold, confidence=confidence)
    return build_bundle(plan.to_write, context_frame, observables, config, written_at,
                        scored_at(merged))


def _decided_at_write_time(context: dg.AssetExecutionContext, source: SourceResource,
                           plan: HoldPlan) -> HoldPlan:
    """The plan with each score decided again, under the scores' own policy, against the score
    the source holds now: a re-score reads no observables, and an analyst may have changed a
    score since they were read (never a blind overwrite)."""
    from cti_assets.scoring.policy import KEEP_HIGHER, decided_again

    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("observable_scores"),
                              asset_partitions=[context.partition_key]), limit=1)
    policy = KEEP_HIGHER
    if records.records:
        materialization = records.records[0].asset_materialization
        recorded = materialization.metadata.get("score_policy") if materialization else None
        policy = str(recorded.value) if recorded is not None else KEEP_HIGHER
    try:
        current = source.get().current_scores(plan.to_write["stix_id"].astype(str))
    except SourceError as error:
        raise dg.Failure(description=str(error)) from None
    return dataclasses.replace(plan, to_write=decided_again(plan.to_write, current, policy))


EVIDENCE_CHECK = "provider_evidence"


def evidence_check(plan: HoldPlan) -> dg.AssetCheckResult:
    """Fails (ERROR) when the day is held back, warns when some observables are."""
    held = len(plan.held_ids)
    if plan.day_held_back:
        severity, text = dg.AssetCheckSeverity.ERROR, (
            f"write-back held back: every provider asked failed, none answered for any of "
            f"the {plan.evidence.failed} observables sent; nothing was written")
    else:
        severity, text = dg.AssetCheckSeverity.WARN, (
            f"{held} observables held back (every provider asked failed on them)"
            if held else "every observable written has provider evidence or needed none")
    return dg.AssetCheckResult(
        check_name=EVIDENCE_CHECK, passed=held == 0, severity=severity, description=text,
        metadata={"held_back": held, **plan.evidence.as_metadata()},
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name="writeback",
    owners=owners("writeback"), tags=tags("writeback"),
    metadata=schema_metadata("opencti_writeback"),
    pool="opencti",
    kinds={"opencti", "stix"},
    retry_policy=WRITEBACK_RETRY,
    ins={"merged_enrichment": dg.AssetIn(
        metadata={"columns": ["stix_id", *FETCHED_AT_COLUMNS, *status_columns()]})},
    check_specs=[dg.AssetCheckSpec(
        EVIDENCE_CHECK, asset="opencti_writeback", blocking=False,
        description="Whether what was written rests on provider answers: fails (ERROR) when "
        "every provider failed all day and the write-back was held back, warns when some "
        "observables were held back because every provider asked about them failed.",
    )],
)
def opencti_writeback(
    context: dg.AssetExecutionContext,
    config: WritebackRunConfig,
    source: SourceResource,
    observable_scores: pd.DataFrame,
    threat_context: pd.DataFrame,
    observables: pd.DataFrame,
    merged_enrichment: pd.DataFrame,
) -> Iterator[dg.Output[pd.DataFrame] | dg.AssetCheckResult]:
    """The partition's scores, notes, indicators and correlations written to the source
    (OpenCTI, or the embedded store) as one idempotent STIX 2.1 bundle; stores each
    observable's write-back status (written, dry_run, held_back, not_written)."""
    from cti_assets.writeback.send import dry_run, send

    plan = plan_hold(observable_scores, merged_enrichment)
    if len(plan.to_write):
        plan = _decided_at_write_time(context, source, plan)
    bundle = partition_bundle(
        observable_scores,
        threat_context,
        observables,
        merged_enrichment,
        datetime.now(UTC),
        config.indicator_threshold,
        config.confidence,
        plan,
    )
    by_type: dict[str, int] = {}
    for obj in bundle["objects"]:
        by_type[obj["type"]] = by_type.get(obj["type"], 0) + 1
    written_ids = {obj["id"] for obj in bundle["objects"]}
    statuses = writeback_statuses(observable_scores, written_ids, plan.held_ids,
                                  config.dry_run, plan.unasked_ids)
    outcome = ("held_back" if plan.day_held_back else "dry_run" if config.dry_run
               else "written")
    metadata: dict = {
        **row_count(len(statuses)),
        **numeric("status_", statuses["writeback_status"].value_counts().to_dict()),
        "writeback": outcome,
        "objects": len(bundle["objects"]),
        "objects_by_type": dg.MetadataValue.json(by_type),
        "bundle_id": bundle["id"],
        "held_back": len(plan.held_ids),
        "not_written_no_provider_asked": len(plan.unasked_ids),
        **plan.evidence.as_metadata(),
    }
    context.instance.add_run_tags(context.run.run_id, {
        "cti/writeback": outcome,
        "cti/no_provider_evidence": str(plan.evidence.without_evidence),
    })
    if plan.day_held_back:
        context.log.warning(
            f"write-back of {context.partition_key} held back: no provider answered for any "
            f"of its {len(plan.held_ids)} observables ({plan.evidence.failed} failed at every "
            f"provider asked, {plan.evidence.not_asked} sent to none); rerun the day when "
            "providers recover")
    elif config.dry_run:
        path = dry_run(bundle, settings.bundles_dir() / f"writeback-{context.partition_key}.json")
        metadata["dry_run_path"] = dg.MetadataValue.path(str(path))
    else:
        try:
            stats = send(source.get(), bundle)
        except SourceError as error:
            raise dg.Failure(description=str(error)) from None
        metadata.update({"created": stats.created, "updated": stats.updated,
                         "failed": stats.failed})
        if stats.failed:
            raise dg.Failure(
                description=f"{stats.failed} objects failed to write; a rerun resends them "
                "safely",
                metadata={"failures": dg.MetadataValue.json(stats.failures[:20]), **metadata},
            )
    yield dg.Output(statuses, metadata=metadata)  # bundle_id says what was sent
    yield evidence_check(plan)
