"""Provider lookup assets, made by one factory: cheap lookups -> triage -> expensive lookups.

Each provider is its own asset in its own pool, so lineage shows which answer came from where
and a slow or exhausted provider never blocks the others. The clients, cache, shared rate
limits and TLP gate live in `cti_assets.providers`; these assets only wire them to partitions.
Where the cache, limits and deferred ledger live (SQLite on this host, or shared) is the state
resources' business (defs/resources.py); each lookup's metadata names the backends it used.
"""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from cti_assets import settings
from cti_assets.defs.metadata import numeric, owners, row_count, schema_metadata, tags
from cti_assets.defs.partitions import daily_partitions
from cti_assets.defs.resources import ProviderResource
from cti_assets.defs.state import RateLimitResource, ResponseCacheResource
from cti_assets.providers import base

LOOKUP_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


class LookupConfig(dg.Config):
    """Run config of a provider lookup."""

    force_refresh: bool = Field(default=False, description="Bypass the response cache")
    refresh_values: list[str] = Field(
        default_factory=list,
        description="Observable values or STIX ids looked up anew (on-demand enrichment)",
    )
    error_rate_warn: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Share of failed lookups above which the error_rate check warns "
        "(default CTI_LOOKUP_ERROR_RATE_WARN, 0.2)",
    )


def run_provider(
    provider: str,
    observables: pd.DataFrame,
    resource: ProviderResource,
    config: LookupConfig,
    deferred: dict[str, str] | None = None,
    retry_first: frozenset[str] = frozenset(),
    *,
    cache_resource: ResponseCacheResource | None = None,
    limits_resource: RateLimitResource | None = None,
):
    """Look up a partition's observables with one provider; refreshed rows bypass the cache;
    rows deferred by an earlier run (`retry_first`) go out first. Returns the frame, the
    stats and the backends used."""
    from cti_assets.lifeline import exit_with_parent
    from cti_assets.providers.runner import lookup_frame

    exit_with_parent()  # a step whose run process was killed sends nothing more
    chosen = resource.provider_settings()
    refresh: bool | frozenset[str] = config.force_refresh or frozenset(config.refresh_values)
    cache = (cache_resource or ResponseCacheResource()).open()
    limiter = (limits_resource or RateLimitResource()).limiter(chosen)
    try:
        frame, stats = lookup_frame(provider, observables, chosen, cache=cache,
                                    limiter=limiter, force_refresh=refresh, deferred=deferred,
                                    retry_first=retry_first)
        backends = {"response_cache": cache.describe(), "rate_limits": limiter.backend}
    finally:
        limiter.close()
        cache.close()
    return frame, stats, backends


def _status_counts(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.json(
        {str(k): int(v) for k, v in frame["status"].value_counts().items()}
    )


def _metadata(stats, frame: pd.DataFrame) -> dict:
    """Calls, cache hits, errors per class, latency and status counts as numbers (plotted
    across partitions), plus the row count."""
    metadata: dict[str, object] = {k: v for k, v in stats.as_metadata().items() if k != "rows"}
    metadata.update(row_count(len(frame)))
    metadata["status_counts"] = _status_counts(frame)
    return metadata


ERROR_RATE_CHECK = "error_rate"


def error_rate_check(
    provider: str, frame: pd.DataFrame, threshold: float | None
) -> dg.AssetCheckResult:
    """The non-blocking error-rate check of one lookup: WARN when too many calls failed."""
    from cti_assets.scoring.evidence import error_rate

    limit = settings.lookup_error_rate_warn() if threshold is None else threshold
    rate = error_rate(frame)
    return dg.AssetCheckResult(
        check_name=ERROR_RATE_CHECK,
        asset_key=dg.AssetKey(f"{provider}_lookups"),
        passed=rate.passes(limit),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"error_rate": rate.share, "failed": rate.failed, "attempted": rate.attempted,
                  "threshold": limit},
        description=f"{rate.failed} of {rate.attempted} attempted lookups failed "
        f"({rate.share:.0%}; warns above {limit:.0%})",
    )


def build_lookup_asset(provider: str, *, expensive: bool) -> dg.AssetsDefinition:
    """One partitioned asset per provider; expensive ones read the triage decisions."""
    ins = {"observables": dg.AssetIn("observables")}
    if expensive:
        ins["lookup_triage"] = dg.AssetIn("lookup_triage")
    check = dg.AssetCheckSpec(
        ERROR_RATE_CHECK,
        asset=f"{provider}_lookups",
        blocking=False,
        description=f"Warns (never blocks) when the share of {provider} lookups that failed "
        "(errors, or deferred because the provider was unavailable) among those attempted "
        "passes the threshold (CTI_LOOKUP_ERROR_RATE_WARN or the run's error_rate_warn).",
    )

    @dg.asset(
        name=f"{provider}_lookups",
        ins=ins,
        partitions_def=daily_partitions,
        group_name="expensive_lookups" if expensive else "cheap_lookups",
        owners=owners("lookups"), tags=tags("lookups"),
        metadata=schema_metadata(f"{provider}_lookups"),
        pool=provider,
        retry_policy=LOOKUP_RETRY,
        required_resource_keys={provider, "response_cache", "rate_limits", "deferred_ledger"},
        check_specs=[check],
        kinds={"python", "api"},
        description=f"{provider} answers for each observable of the partition: one row per "
        "observable with its status (ok, not_found, skipped with a reason, deferred, or error "
        "with a class); raw bodies in the response cache under raw_digest; the answer's fields "
        "as JSON and parsed into typed `<provider>__<field>` columns.",
    )
    def _lookup(
        context: dg.AssetExecutionContext, config: LookupConfig, **inputs
    ) -> Iterator[dg.Output[pd.DataFrame] | dg.AssetCheckResult]:
        from cti_assets.providers.typed_fields import with_typed_fields

        observables: pd.DataFrame = inputs["observables"]
        deferred = None
        if expensive:
            from cti_assets.scoring.triage import deferred_map

            deferred = deferred_map(inputs["lookup_triage"], provider)
        from cti_assets.pool_guard import hold_pool

        resource: ProviderResource = getattr(context.resources, provider)
        ledger = context.resources.deferred_ledger.open()
        # Dagster's pool claim is not strict (cti_assets/pool_guard.py): hold the pool here too
        limit = context.instance.event_log_storage.get_concurrency_info(provider).limit
        try:
            with hold_pool(provider, limit, settings.data_dir() / "pools"):
                frame, stats, backends = run_provider(
                    provider, observables, resource, config, deferred,
                    frozenset(ledger.pending(provider)),
                    cache_resource=context.resources.response_cache,
                    limits_resource=context.resources.rate_limits)
            ledger.record(provider, context.partition_key, frame)
            backends["deferred_ledger"] = ledger.describe()
        finally:
            ledger.close()
        metadata = {**_metadata(stats, frame),
                    "state_backends": dg.MetadataValue.json(backends)}
        # fields parsed once here, not at each re-score
        yield dg.Output(with_typed_fields(provider, frame), metadata=metadata)
        yield error_rate_check(provider, frame, config.error_rate_warn)

    return _lookup


@dg.asset(
    partitions_def=daily_partitions,
    group_name="cheap_lookups",
    kinds={"python"},
    owners=owners("lookups"), tags=tags("lookups"),
    metadata=schema_metadata("network_context_lookups"),
    description="Offline network context (special-use ranges, public suffix, IDN and "
    "confusables, entropy, URL features, hash type). No network at all.",
)
def network_context_lookups(
    context: dg.AssetExecutionContext, observables: pd.DataFrame
) -> pd.DataFrame:
    from cti_assets.providers.fields import column
    from cti_assets.providers.network_context import network_context_frame
    from cti_assets.providers.typed_fields import with_typed_fields

    frame = with_typed_fields(base.NETWORK_CONTEXT, network_context_frame(observables))
    special = frame[column(base.NETWORK_CONTEXT, "is_special_use")].fillna(False).sum()
    context.add_output_metadata(
        {**row_count(len(frame)), "special_use": int(special),
         **numeric("status_", frame["status"].value_counts().to_dict()),
         "status_counts": _status_counts(frame)}
    )
    return frame


# every provider of the registry gets its asset: cheap ones before triage, expensive after
CHEAP_API_PROVIDERS = tuple(p for p in base.CHEAP_PROVIDERS if p != base.NETWORK_CONTEXT)
cheap_lookup_assets = [build_lookup_asset(p, expensive=False) for p in CHEAP_API_PROVIDERS]
expensive_lookup_assets = [build_lookup_asset(p, expensive=True) for p in base.EXPENSIVE_PROVIDERS]


class TriageConfig(dg.Config):
    """Daily budgets of the expensive providers; unset means what the shared limiter has left."""

    budgets: dict[str, int] = Field(default_factory=dict)


@dg.asset(
    partitions_def=daily_partitions,
    group_name="triage",
    kinds={"python"},
    owners=owners("lookups"), tags=tags("lookups"),
    metadata=schema_metadata("lookup_triage"),
    ins={
        "observables": dg.AssetIn("observables"),
        "network_context_lookups": dg.AssetIn("network_context_lookups"),
        **{f"{p}_lookups": dg.AssetIn(f"{p}_lookups") for p in CHEAP_API_PROVIDERS},
    },
    required_resource_keys={*base.EXPENSIVE_PROVIDERS, "rate_limits", "deferred_ledger"},
)
def lookup_triage(
    context: dg.AssetExecutionContext, config: TriageConfig, **inputs
) -> pd.DataFrame:
    """Which observables earn an expensive lookup today: a preliminary score from the cheap
    providers, then the uncertain and the most urgent first, within each expensive provider's
    remaining daily budget; the rest are deferred to later runs (previously deferred first)."""
    from cti_assets.scoring.merge import merge_lookups
    from cti_assets.scoring.model import score_frame
    from cti_assets.scoring.triage import triage

    observables_df: pd.DataFrame = inputs["observables"]
    cheap = {
        name.removesuffix("_lookups"): frame
        for name, frame in inputs.items()
        if name.endswith("_lookups")
    }
    prelim = score_frame(merge_lookups(observables_df, cheap), None)
    budgets: dict[str, int | None] = {}
    for provider in base.EXPENSIVE_PROVIDERS:
        if provider in config.budgets:
            budgets[provider] = config.budgets[provider]
            continue
        chosen = getattr(context.resources, provider).provider_settings()
        with context.resources.rate_limits.limiter(chosen) as limiter:
            budgets[provider] = limiter.remaining("day")
    ledger = context.resources.deferred_ledger.open()
    try:
        previously = {p: ledger.pending(p) for p in base.EXPENSIVE_PROVIDERS}
    finally:
        ledger.close()
    decisions = triage(prelim, budgets, previously_deferred=previously)
    selected = decisions[decisions["selected"]].groupby("provider").size().to_dict()
    deferred = decisions[~decisions["selected"]].groupby("provider").size().to_dict()
    context.add_output_metadata(
        {
            **row_count(len(decisions)),
            **numeric("selected_", {k: int(v) for k, v in selected.items()}),
            **numeric("deferred_", {k: int(v) for k, v in deferred.items()}),
            "budgets": dg.MetadataValue.json({k: v for k, v in budgets.items()}),
            "selected": dg.MetadataValue.json({k: int(v) for k, v in selected.items()}),
            "deferred": dg.MetadataValue.json({k: int(v) for k, v in deferred.items()}),
        }
    )
    return decisions
