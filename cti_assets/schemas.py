"""Every asset's columns and their types, assembled from the table contracts.

tables.py owns each table's own columns and providers/fields.py each provider's typed fields;
the tables that combine them (a provider's lookups, merged_enrichment, the scores) are put
together here, once, for whoever needs the whole list: the column schema the assets publish,
and tests. Plain Python, no Dagster.
"""

from __future__ import annotations

from cti_assets.providers.fields import PROVIDER_FIELDS, column
from cti_assets.tables import (
    CONTEXT_COLUMNS,
    LOOKUP_COLUMNS,
    MERGED_LOOKUP_COLUMNS,
    OBSERVABLE_COLUMNS,
    SCORE_COLUMNS,
    SCORE_POLICY_COLUMNS,
    TRIAGE_COLUMNS,
    WRITEBACK_COLUMNS,
)


def lookup_columns(provider: str) -> dict[str, str]:
    """A `<provider>_lookups` table: the lookup columns, then its typed field columns."""
    typed = {column(provider, name): dtype for name, dtype in PROVIDER_FIELDS[provider].items()}
    return {**LOOKUP_COLUMNS, **typed}


def merged_columns() -> dict[str, str]:
    """merged_enrichment: the observable's columns, then each provider's (merge_lookups)."""
    out = dict(OBSERVABLE_COLUMNS)
    for provider, fields in PROVIDER_FIELDS.items():
        out.update({column(provider, meta): dtype for meta, dtype in MERGED_LOOKUP_COLUMNS.items()})
        out.update({column(provider, name): dtype for name, dtype in fields.items()})
    return out


def asset_columns(asset: str) -> dict[str, str]:
    """Column name -> type of an asset's stored table."""
    fixed = {
        "observables": OBSERVABLE_COLUMNS,
        "lookup_triage": TRIAGE_COLUMNS,
        "merged_enrichment": merged_columns(),
        "threat_context": CONTEXT_COLUMNS,
        "observable_scores": {**SCORE_COLUMNS, **SCORE_POLICY_COLUMNS},
        "opencti_writeback": WRITEBACK_COLUMNS,
    }
    if asset in fixed:
        return dict(fixed[asset])
    provider = asset.removesuffix("_lookups")
    if asset.endswith("_lookups") and provider in PROVIDER_FIELDS:
        return lookup_columns(provider)
    raise KeyError(f"no table contract for asset {asset!r}")
