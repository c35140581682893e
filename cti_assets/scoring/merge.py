"""Flatten every provider's lookups into one wide row per observable (`merged_enrichment`).

Scoring, context and explanations read one row per observable with `<provider>__<field>`
columns instead of seven long tables. The `fields` JSON of each lookup row is parsed once per
distinct JSON text (many rows share one, e.g. `{}` for skips), then the typed columns are
gathered back to rows by position, so a million rows stay fast.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cti_assets.providers.fields import PROVIDER_FIELDS, column

# Lookup columns copied next to the provider's fields, with the dtype they get in the merge.
LOOKUP_META: dict[str, str] = {
    "status": "string",
    "reason": "string",
    "raw_digest": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "from_cache": "boolean",
}


def merged_columns(provider: str) -> list[str]:
    """Names of the columns a provider adds to merged_enrichment, in order."""
    names = [column(provider, meta) for meta in LOOKUP_META]
    return names + [column(provider, name) for name in PROVIDER_FIELDS[provider]]


def merge_lookups(observables: pd.DataFrame, lookups: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per observable (rejected ones too): its columns plus each present provider's.

    Lookup rows join on stix_id; an observable without a lookup row gets nulls for that
    provider (status null means the provider never reported on it). Providers absent from
    `lookups` get no columns at all. Lookup rows for unknown stix_ids are ignored.
    """
    if "stix_id" not in observables.columns:
        raise ValueError("observables frame has no 'stix_id' column")
    base = observables.reset_index(drop=True)
    stix_ids = _arrow_strings(base["stix_id"])
    added: dict[str, Any] = {}
    for provider in sorted(lookups, key=_provider_order):
        added.update(_provider_columns(provider, lookups[provider], stix_ids))
    if not added:
        return base.copy()
    return pd.concat([base, pd.DataFrame(added, index=base.index)], axis=1)


def _provider_order(provider: str) -> int:
    known = list(PROVIDER_FIELDS)
    return known.index(provider) if provider in known else len(known)


def _provider_columns(
    provider: str, frame: pd.DataFrame, stix_ids: pa.Array
) -> dict[str, pd.api.extensions.ExtensionArray]:
    if provider not in PROVIDER_FIELDS:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_FIELDS)}")
    missing = {"stix_id", "status"} - set(frame.columns)
    if missing:
        raise ValueError(f"{provider} lookups lack column(s): {', '.join(sorted(missing))}")
    lookup_ids = _arrow_strings(frame["stix_id"])
    positions = _positions(stix_ids, lookup_ids)
    if positions is None:
        if pc.count_distinct(lookup_ids).as_py() != len(lookup_ids):
            # One row per observable is the contract; if a stix_id repeats, its last row wins.
            frame = frame.iloc[::-1].drop_duplicates("stix_id").iloc[::-1]
            lookup_ids = _arrow_strings(frame["stix_id"])
        # Row of the lookup frame for each observable; null where the provider has no row.
        positions = pc.index_in(stix_ids, value_set=lookup_ids)
    out: dict[str, pd.api.extensions.ExtensionArray] = {}
    for meta, dtype in LOOKUP_META.items():
        source = frame[meta] if meta in frame.columns else pd.Series(None, index=frame.index)
        out[column(provider, meta)] = _meta_array(source, dtype, positions)
    if "fields" in frame.columns:
        encoded = pc.dictionary_encode(_arrow_strings(frame["fields"]).take(positions))
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        parsed = [_parse_fields(provider, text) for text in encoded.dictionary.to_pylist()]
    else:
        codes, parsed = np.full(len(stix_ids), -1, dtype=np.int64), []
    for name, dtype in PROVIDER_FIELDS[provider].items():
        # One extra null slot at the end: code -1 (no lookup row, null fields) selects it.
        values = [doc.get(name) for doc in parsed] + [None]
        out[column(provider, name)] = _field_array(provider, name, dtype, values).take(codes)
    return out


def _positions(stix_ids: pa.Array, lookup_ids: pa.Array) -> pa.Array | None:
    """Fast path: lookup assets usually keep the observables' row order, so no hash join."""
    if len(stix_ids) != len(lookup_ids) or lookup_ids.null_count:
        return None
    if not pc.all(pc.equal(stix_ids, lookup_ids)).as_py():
        return None
    return pa.array(np.arange(len(stix_ids), dtype=np.int64))


def _arrow_strings(series: pd.Series) -> pa.Array:
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_null(array.type):
        return array.cast(pa.large_string())
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise ValueError(f"column {series.name!r} must hold strings, got {array.type}")
    return array


def _meta_array(source: pd.Series, dtype: str, positions: pa.Array):
    if dtype == "string":
        return pd.arrays.ArrowStringArray(_arrow_strings(source).take(positions).cast(pa.string()))
    if dtype == "boolean":
        values = pa.array(source.astype("boolean"), type=pa.bool_(), from_pandas=True)
        return pd.array(values.take(positions).to_pandas(), dtype="boolean")
    stamps = pd.to_datetime(source, utc=True, errors="coerce")
    values = pa.array(stamps, from_pandas=True).take(positions)
    return pd.array(pd.to_datetime(values.to_pandas(), utc=True))


def _parse_fields(provider: str, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{provider} lookups: 'fields' is not valid JSON ({exc.msg})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{provider} lookups: 'fields' must be a JSON object, got {type(doc)}")
    return doc


def _field_array(
    provider: str, name: str, dtype: str, values: list[Any]
) -> pd.api.extensions.ExtensionArray:
    try:
        if dtype == "list":
            array = np.empty(len(values), dtype=object)
            array[:] = [_as_list(value) for value in values]
            return pd.array(array, dtype=object)
        if dtype == "string":
            return pd.array([None if v is None else str(v) for v in values], dtype="string")
        return pd.array(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{provider} field {name!r} does not hold {dtype} values: {exc}") from None


def _as_list(value: Any) -> list | None:
    if value is None or isinstance(value, list):
        return value
    raise TypeError(f"expected a JSON list, got {type(value).__name__}")
