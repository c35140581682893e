"""Every asset's columns, their types and descriptions, assembled from the table contracts.

tables.py owns each table's own columns and providers/fields.py each provider's typed fields;
the tables that combine them (a provider's lookups, merged_enrichment, the scores) are put
together here, once, for whoever needs the whole list: the column schema the assets publish,
and tests. A provider's columns are described from those owners, with its name. Plain Python,
no Dagster.
"""

from __future__ import annotations

from cti_assets.providers.base import NETWORK_CONTEXT, PROVIDER_LABELS
from cti_assets.providers.fields import FIELD_NOTES, PROVIDER_FIELDS, column
from cti_assets.tables import (
    CONTEXT_COLUMNS,
    CONTEXT_DESCRIPTIONS,
    LOOKUP_COLUMNS,
    LOOKUP_DESCRIPTIONS,
    MERGED_LOOKUP_COLUMNS,
    OBSERVABLE_COLUMNS,
    OBSERVABLE_DESCRIPTIONS,
    SCORE_COLUMNS,
    SCORE_DESCRIPTIONS,
    SCORE_POLICY_COLUMNS,
    SCORE_POLICY_DESCRIPTIONS,
    TRIAGE_COLUMNS,
    TRIAGE_DESCRIPTIONS,
    WRITEBACK_COLUMNS,
    WRITEBACK_DESCRIPTIONS,
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


def field_description(provider: str, name: str) -> str:
    """A typed field column: "<field> as <Provider> answered it", with fields.py's note."""
    label = PROVIDER_LABELS[provider]
    said = f"as {label} found it" if provider == NETWORK_CONTEXT else f"as {label} answered it"
    note = FIELD_NOTES.get(provider, {}).get(name)
    return f"{name.replace('_', ' ').capitalize()}, {said}" + (f": {note}" if note else "")


def _provider_described(provider: str, names: dict[str, str]) -> dict[str, str]:
    label = PROVIDER_LABELS[provider]
    out = {}
    for meta in names:
        text = LOOKUP_DESCRIPTIONS[meta]
        out[column(provider, meta)] = f"{label} lookup {meta.replace('_', ' ')}: " + (
            text[0].lower() + text[1:])
    return out


def asset_descriptions(asset: str) -> dict[str, str]:
    """Column name -> what it holds, for each column of asset_columns(asset)."""
    fixed = {
        "observables": OBSERVABLE_DESCRIPTIONS,
        "lookup_triage": TRIAGE_DESCRIPTIONS,
        "threat_context": CONTEXT_DESCRIPTIONS,
        "observable_scores": {**SCORE_DESCRIPTIONS, **SCORE_POLICY_DESCRIPTIONS},
        "opencti_writeback": WRITEBACK_DESCRIPTIONS,
    }
    if asset in fixed:
        return dict(fixed[asset])
    if asset == "merged_enrichment":
        out = dict(OBSERVABLE_DESCRIPTIONS)
        for provider, fields in PROVIDER_FIELDS.items():
            out.update(_provider_described(provider, MERGED_LOOKUP_COLUMNS))
            out.update({column(provider, name): field_description(provider, name)
                        for name in fields})
        return out
    provider = asset.removesuffix("_lookups")
    if asset.endswith("_lookups") and provider in PROVIDER_FIELDS:
        return {**LOOKUP_DESCRIPTIONS, **{column(provider, name): field_description(provider, name)
                                          for name in PROVIDER_FIELDS[provider]}}
    raise KeyError(f"no table contract for asset {asset!r}")
