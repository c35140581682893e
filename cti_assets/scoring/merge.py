"""Flatten every provider's lookups into one wide row per observable (`merged_enrichment`).

Scoring, context and explanations read one row per observable with `<provider>__<field>`
columns instead of seven long tables. The `fields` JSON of all lookup rows is parsed by Arrow in
one pass with a schema from PROVIDER_FIELDS and the typed columns are gathered back to rows by
position, so a million rows take seconds and no Python object per value.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cti_assets.providers.fields import PROVIDER_FIELDS, column
from cti_assets.providers.typed_fields import (
    arrow_strings,
    fields_texts,
    has_typed_fields,
    pandas_array,
    parsed_columns,
    stored_field,
)
from cti_assets.storage.parquet import to_frame
from cti_assets.tables import MERGED_LOOKUP_COLUMNS

UTC_STAMPS = pd.DatetimeTZDtype("ns", "UTC")


def merged_columns(provider: str) -> list[str]:
    """Names of the columns a provider adds to merged_enrichment, in order."""
    names = [column(provider, meta) for meta in MERGED_LOOKUP_COLUMNS]
    return names + [column(provider, name) for name in PROVIDER_FIELDS[provider]]


def merge_lookups(observables: pd.DataFrame, lookups: dict[str, pd.DataFrame | pa.Table],
                  ) -> pd.DataFrame:
    """One row per observable (rejected ones too): its columns plus each present provider's.

    A lookup slice may come as the Arrow table read from storage: when it holds typed field
    columns and the observables' rows in their order (as the lookup assets store them), its
    field columns go to the merged frame without a pandas frame of the whole slice between
    (the same arrays, one conversion fewer); otherwise it is made a frame first.

    Lookup rows join on stix_id; an observable without a lookup row gets nulls for that
    provider (status null means the provider never reported on it). Providers absent from
    `lookups` get no columns at all. Lookup rows for unknown stix_ids are ignored.
    """
    if "stix_id" not in observables.columns:
        raise ValueError("observables frame has no 'stix_id' column")
    base = observables.reset_index(drop=True)
    stix_ids = arrow_strings(base["stix_id"])
    added: dict[str, Any] = {}
    for provider in sorted(lookups, key=_provider_order):
        added.update(_provider_columns(provider, lookups[provider], stix_ids))
    if not added:
        return base.copy()
    # The provider columns are new arrays made for this frame, and `base` is a copy already:
    # neither needs copying again to be joined (two copies of every column otherwise).
    return pd.concat([base, pd.DataFrame(added, index=base.index, copy=False)], axis=1,
                     copy=False)


def _provider_order(provider: str) -> int:
    known = list(PROVIDER_FIELDS)
    return known.index(provider) if provider in known else len(known)


def _provider_columns(
    provider: str, frame: pd.DataFrame | pa.Table, stix_ids: pa.Array
) -> dict[str, pd.api.extensions.ExtensionArray]:
    if provider not in PROVIDER_FIELDS:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_FIELDS)}")
    names = frame.column_names if isinstance(frame, pa.Table) else frame.columns
    missing = {"stix_id", "status"} - set(names)
    if missing:
        raise ValueError(f"{provider} lookups lack column(s): {', '.join(sorted(missing))}")
    if isinstance(frame, pa.Table):
        if has_typed_fields(provider, names) and _same_order(
                stix_ids, frame.column("stix_id").combine_chunks().cast(pa.large_string())):
            return _arrow_columns(provider, frame)
        frame = to_frame(frame)
    lookup_ids = arrow_strings(frame["stix_id"])
    positions: pa.Array | None = None  # None: the lookup rows are the observables' rows
    if not _same_order(stix_ids, lookup_ids):
        if pc.count_distinct(lookup_ids).as_py() != len(lookup_ids):
            # One row per observable is the contract; if a stix_id repeats, its last row wins.
            frame = frame.iloc[::-1].drop_duplicates("stix_id").iloc[::-1]
            lookup_ids = arrow_strings(frame["stix_id"])
        # Row of the lookup frame for each observable; null where the provider has no row.
        positions = pc.index_in(stix_ids, value_set=lookup_ids)
    out: dict[str, pd.api.extensions.ExtensionArray] = {}
    for meta, dtype in MERGED_LOOKUP_COLUMNS.items():
        source = frame[meta] if meta in frame.columns else pd.Series(None, index=frame.index)
        out[column(provider, meta)] = _meta_array(source, dtype, positions)
    if has_typed_fields(provider, frame.columns):  # parsed when stored
        for name, dtype in PROVIDER_FIELDS[provider].items():
            values = _take(stored_field(frame[column(provider, name)], dtype), positions)
            out[column(provider, name)] = pandas_array(values, dtype)
        return out
    out.update(parsed_columns(provider, fields_texts(frame, positions)))
    return out


def _arrow_columns(provider: str, table: pa.Table) -> dict[str, pd.api.extensions.ExtensionArray]:
    """`_provider_columns` of a lookup slice in the observables' order, read as Arrow: lookup
    columns stored as their usual Arrow type taken from Arrow directly, any other one made
    pandas as a frame of its own (as a whole slice's frame would make it), the typed fields
    taken from the Arrow columns as pandas would have handed them on."""
    direct = {meta for meta, dtype in MERGED_LOOKUP_COLUMNS.items()
              if meta in table.column_names
              and table.schema.field(meta).type == _STORED.get(dtype)}
    present = [meta for meta in MERGED_LOOKUP_COLUMNS
               if meta in table.column_names and meta not in direct]
    metas = to_frame(table.select(present)) if present else None
    out: dict[str, pd.api.extensions.ExtensionArray] = {}
    for meta, dtype in MERGED_LOOKUP_COLUMNS.items():
        if meta in direct:
            out[column(provider, meta)] = _stored_meta_array(table.column(meta), dtype)
            continue
        source = (metas[meta] if metas is not None and meta in present
                  else pd.Series(None, index=pd.RangeIndex(table.num_rows)))
        out[column(provider, meta)] = _meta_array(source, dtype, None)
    for name, dtype in PROVIDER_FIELDS[provider].items():
        stored = column(provider, name)
        out[stored] = pandas_array(stored_field(table.column(stored), dtype, stored), dtype)
    return out


# The Arrow types the lookup assets store the lookup columns as: such a column becomes the same
# pandas array as `_meta_array` makes of it, without a pandas frame of it first.
_STORED = {"string": pa.string(), "boolean": pa.bool_(),
           "datetime64[ns, UTC]": pa.timestamp("ns", "UTC")}


def _stored_meta_array(stored: pa.ChunkedArray, dtype: str) -> pd.api.extensions.ExtensionArray:
    """`_meta_array` of a lookup column read as `_STORED[dtype]`, taken from Arrow."""
    values = stored.combine_chunks()
    if dtype == "string":
        return pd.arrays.ArrowStringArray(values)
    if dtype == "boolean":
        return pd.array(values.to_pandas(), dtype="boolean")
    return values.to_pandas().array


def _same_order(stix_ids: pa.Array, lookup_ids: pa.Array) -> bool:
    """Fast path: lookup assets usually keep the observables' row order, so no hash join and
    no copy of the lookup columns."""
    if len(stix_ids) != len(lookup_ids) or lookup_ids.null_count:
        return False
    return bool(pc.all(pc.equal(stix_ids, lookup_ids)).as_py())


def _take(values: pa.Array | pa.ChunkedArray, positions: pa.Array | None,
          ) -> pa.Array | pa.ChunkedArray:
    """`values` at `positions` (None: every row in order, nothing copied)."""
    return values if positions is None else values.take(positions)


def _meta_array(
    source: pd.Series, dtype: str, positions: pa.Array | None,
) -> pd.api.extensions.ExtensionArray:
    if dtype == "string":
        return pd.arrays.ArrowStringArray(
            _take(arrow_strings(source), positions).cast(pa.string()))
    if dtype == "boolean":
        values = pa.array(source.astype("boolean"), type=pa.bool_(), from_pandas=True)
        return pd.array(_take(values, positions).to_pandas(), dtype="boolean")
    if source.dtype != UTC_STAMPS:
        source = pd.to_datetime(source, utc=True, errors="coerce").astype(UTC_STAMPS)
    values = _take(pa.array(source, from_pandas=True), positions)
    return values.to_pandas().array


