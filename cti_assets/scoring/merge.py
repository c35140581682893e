"""Flatten every provider's lookups into one wide row per observable (`merged_enrichment`).

Scoring, context and explanations read one row per observable with `<provider>__<field>`
columns instead of seven long tables. The `fields` JSON of all lookup rows is parsed by Arrow in
one pass with a schema from PROVIDER_FIELDS and the typed columns are gathered back to rows by
position, so a million rows take seconds and no Python object per value.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from cti_assets.providers.fields import PROVIDER_FIELDS, column, is_list

# Lookup columns copied next to the provider's fields, with the dtype they get in the merge.
LOOKUP_META: dict[str, str] = {
    "status": "string",
    "reason": "string",
    "raw_digest": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "from_cache": "boolean",
}

# Arrow type of each PROVIDER_FIELDS dtype, and the pandas dtype merged columns get.
ARROW_TYPES: dict[str, pa.DataType] = {
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "list[int]": pa.list_(pa.int64()),
    "list[str]": pa.list_(pa.string()),
}
UTC_STAMPS = pd.DatetimeTZDtype("ns", "UTC")
PANDAS_TYPES: dict[pa.DataType, object] = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype("pyarrow"),
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


def typed_field_columns(provider: str) -> list[str]:
    """The `<provider>__<field>` columns a lookups table stores beside its `fields` JSON."""
    return [column(provider, name) for name in PROVIDER_FIELDS[provider]]


def has_typed_fields(provider: str, columns) -> bool:
    """Whether a lookups table with these columns stores every field parsed (tables written
    before a field was added do not, and are merged from their JSON)."""
    return set(typed_field_columns(provider)) <= set(columns)


def with_typed_fields(provider: str, lookups: pd.DataFrame) -> pd.DataFrame:
    """Lookup rows plus their `fields` parsed into one typed column each.

    A lookup is stored once and merged at every re-score: parsing its JSON here, when the day's
    lookups are written, spares each re-score of history from parsing it again (at a million
    observables, close to a gigabyte of JSON).
    """
    texts = _fields_texts(lookups)
    typed = pd.DataFrame(_parsed_columns(provider, texts), index=lookups.index)
    return pd.concat([lookups.drop(columns=typed.columns, errors="ignore"), typed], axis=1)


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
    if has_typed_fields(provider, frame.columns):  # parsed when stored
        for name, dtype in PROVIDER_FIELDS[provider].items():
            values = _stored_field(frame[column(provider, name)], dtype).take(positions)
            out[column(provider, name)] = _pandas_array(values, dtype)
        return out
    out.update(_parsed_columns(provider, _fields_texts(frame, positions)))
    return out


def _fields_texts(frame: pd.DataFrame, positions: pa.Array | None = None) -> pa.Array:
    """The `fields` JSON of every row, or at the given row positions (null where a position
    is null)."""
    size = len(frame) if positions is None else len(positions)
    if "fields" not in frame.columns:
        return pa.nulls(size, pa.large_string())
    texts = _arrow_strings(frame["fields"])
    return texts if positions is None else texts.take(positions)


def _parsed_columns(provider: str, texts: pa.Array) -> dict[str, pd.api.extensions.ExtensionArray]:
    parsed = _parse_fields(provider, texts)
    return {column(provider, name): _pandas_array(parsed.column(name), dtype)
            for name, dtype in PROVIDER_FIELDS[provider].items()}


def _stored_field(series: pd.Series, dtype: str) -> pa.Array:
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    try:
        return array.cast(ARROW_TYPES[dtype])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(f"stored column {series.name!r} does not hold {dtype} values: "
                         f"{exc}") from None


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
    if source.dtype != UTC_STAMPS:
        source = pd.to_datetime(source, utc=True, errors="coerce").astype(UTC_STAMPS)
    values = pa.array(source, from_pandas=True).take(positions)
    return values.to_pandas().array


def _parse_fields(provider: str, texts: pa.Array) -> pa.Table:
    """The provider's fields as one typed column each, a row per text (null text: all null).

    The texts are parsed as newline-delimited JSON by Arrow in one pass, with the schema from
    PROVIDER_FIELDS; texts Arrow cannot take that way (a newline inside, a type that needs
    coercion, invalid JSON) go through json.loads, which also names what is wrong.
    """
    schema = pa.schema([pa.field(name, ARROW_TYPES[dtype])
                        for name, dtype in PROVIDER_FIELDS[provider].items()])
    empty_object = pa.scalar("{}", pa.large_string())
    texts = texts.cast(pa.large_string()).fill_null(empty_object)
    blank = pc.is_in(texts, value_set=pa.array(["", "null"], pa.large_string()))
    texts = pc.if_else(blank, empty_object, texts)
    table = _read_ndjson(texts, schema)
    return table if table is not None else _parse_one_by_one(provider, texts, schema)


def _read_ndjson(texts: pa.Array, schema: pa.Schema) -> pa.Table | None:
    """None when the texts are not one JSON object per line of the schema's types."""
    newline = pa.scalar("\n", pa.large_string())
    lines = pc.binary_join_element_wise(texts, pa.scalar("", pa.large_string()), newline)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, stop = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(pa.BufferReader(lines.buffers()[2][start:stop]),
                                 parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if table.num_rows != len(texts):  # a text holding a newline or several objects
        return None
    return table.select(schema.names).combine_chunks()


def _parse_one_by_one(provider: str, texts: pa.Array, schema: pa.Schema) -> pa.Table:
    encoded = pc.dictionary_encode(texts)
    documents = [_parse_document(provider, text) for text in encoded.dictionary.to_pylist()]
    columns = []
    for field in schema:
        values = [document.get(field.name) for document in documents]
        columns.append(_typed(provider, field, values).take(encoded.indices))
    return pa.Table.from_arrays(columns, schema=schema)


def _parse_document(provider: str, text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{provider} lookups: 'fields' is not valid JSON ({exc.msg})") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(
            f"{provider} lookups: 'fields' must be a JSON object, got {type(document).__name__}")
    return document


def _typed(provider: str, field: pa.Field, values: list[Any]) -> pa.Array:
    """Values as the field's Arrow type, with the coercions pandas allows (3.0 -> 3)."""
    dtype = PROVIDER_FIELDS[provider][field.name]
    try:
        if is_list(dtype):
            return pa.array(values, type=field.type)
        if dtype == "string":
            values = [None if v is None else str(v) for v in values]
        return pa.array(pd.array(values, dtype=dtype), type=field.type)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise ValueError(
            f"{provider} field {field.name!r} does not hold {dtype} values: {exc}") from None


def _pandas_array(values: pa.Array | pa.ChunkedArray, dtype: str):
    if is_list(dtype):
        return pd.arrays.ArrowExtensionArray(values)
    return values.to_pandas(types_mapper=PANDAS_TYPES.get).array
