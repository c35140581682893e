"""Dagster metadata every asset publishes: owners, tags, column schema, row counts, lineage.

The facts come from plain modules (cti_assets.schemas for columns, cti_assets.scoring.lineage
for what scoring reads); this module only puts them in the shapes the Dagster UI understands,
so the asset pages show a column schema, plot numeric entries across partitions and draw
column lineage from a score down to a provider's typed lookup column.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import dagster as dg

ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"
COLUMN_LINEAGE = "dagster/column_lineage"

# Who answers for what: data engineering runs intake and lookups, the CTI team owns the scores
# and what is written back to the platform.
OWNERS: dict[str, list[str]] = {
    "ingest": ["team:data-engineering"],
    "lookups": ["team:data-engineering"],
    "scoring": ["team:cti-analysts", "team:data-engineering"],
    "writeback": ["team:cti-analysts"],
}


def tags(stage: str) -> dict[str, str]:
    """Searchable tags of an asset of a pipeline stage (ingest, lookups, scoring, writeback)."""
    return {"domain": "cti", "stage": stage}


def owners(stage: str) -> list[str]:
    return list(OWNERS[stage])


def schema_metadata(asset: str) -> dict[str, dg.TableSchema]:
    """The definition metadata of an asset: its column schema, shown before any run."""
    return {COLUMN_SCHEMA: column_schema(asset)}


@cache
def column_schema(asset: str) -> dg.TableSchema:
    """The asset's stored columns, types and descriptions, as tables.py (and providers/fields.py)
    say."""
    from cti_assets.schemas import asset_columns, asset_descriptions

    described = asset_descriptions(asset)
    return dg.TableSchema(columns=[dg.TableColumn(name, dtype, description=described.get(name))
                                   for name, dtype in asset_columns(asset).items()])


def row_count(rows: int) -> dict[str, dg.MetadataValue]:
    return {ROW_COUNT: dg.MetadataValue.int(int(rows))}


def numeric(prefix: str, counts: Mapping[str, int]) -> dict[str, dg.MetadataValue]:
    """One integer entry per key (`prefix` + key, as an identifier): plotted per partition."""
    def key(name: str) -> str:
        return prefix + "".join(c if c.isalnum() else "_" for c in name)
    return {key(name): dg.MetadataValue.int(int(value)) for name, value in counts.items()}


@cache
def score_column_lineage() -> dg.TableColumnLineage:
    """Each score column -> the merged_enrichment and threat_context columns scoring reads."""
    from cti_assets.scoring.lineage import score_reads

    return dg.TableColumnLineage(deps_by_column={
        score_column: [dg.TableColumnDep(asset_key=dg.AssetKey(asset), column_name=name)
                       for asset, names in by_asset.items() for name in names]
        for score_column, by_asset in score_reads().items()
    })


@cache
def merged_column_lineage() -> dg.TableColumnLineage:
    """Each merged_enrichment column -> the observables or lookups column it is copied from."""
    from cti_assets.scoring.lineage import merged_lineage

    return dg.TableColumnLineage(deps_by_column={
        merged: [dg.TableColumnDep(asset_key=dg.AssetKey(asset), column_name=name)]
        for merged, (asset, name) in merged_lineage().items()
    })
