"""A lookups table's typed columns: each answer's `fields` JSON parsed into one
`<provider>__<field>` column per PROVIDER_FIELDS entry, with its Arrow type.

The lookup stage owns the shape of its table, so the parse lives here (providers/fields.py stays
the dependency-free contract of names and types). A lookup is stored once and merged at every
re-score: parsing when the day's lookups are written spares each re-score from parsing again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from cti_assets.providers.fields import PROVIDER_FIELDS, column, is_list

# Arrow type of each PROVIDER_FIELDS dtype, and the pandas dtype merged columns get.
ARROW_TYPES: dict[str, pa.DataType] = {
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "list[int]": pa.list_(pa.int64()),
    "list[str]": pa.list_(pa.string()),
}
PANDAS_TYPES: dict[pa.DataType, object] = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype("pyarrow"),
}



def typed_field_columns(provider: str) -> list[str]:
    """The `<provider>__<field>` columns a lookups table stores beside its `fields` JSON."""
    return [column(provider, name) for name in PROVIDER_FIELDS[provider]]


def has_typed_fields(provider: str, columns: Iterable[str]) -> bool:
    """Whether a lookups table with these columns stores every field parsed (tables written
    before a field was added do not, and are merged from their JSON)."""
    return set(typed_field_columns(provider)) <= set(columns)


def with_typed_fields(provider: str, lookups: pd.DataFrame) -> pd.DataFrame:
    """Lookup rows plus their `fields` parsed into one typed column each.

    A lookup is stored once and merged at every re-score: parsing its JSON here, when the day's
    lookups are written, spares each re-score of history from parsing it again (at a million
    observables, close to a gigabyte of JSON).
    """
    texts = fields_texts(lookups)
    typed = pd.DataFrame(parsed_columns(provider, texts), index=lookups.index)
    return pd.concat([lookups.drop(columns=typed.columns, errors="ignore"), typed], axis=1)


def fields_texts(frame: pd.DataFrame, positions: pa.Array | None = None) -> pa.Array:
    """The `fields` JSON of every row, or at the given row positions (null where a position
    is null)."""
    size = len(frame) if positions is None else len(positions)
    if "fields" not in frame.columns:
        return pa.nulls(size, pa.large_string())
    texts = arrow_strings(frame["fields"])
    return texts if positions is None else texts.take(positions)


def parsed_columns(provider: str, texts: pa.Array) -> dict[str, pd.api.extensions.ExtensionArray]:
    parsed = _parse_fields(provider, texts)
    return {column(provider, name): pandas_array(parsed.column(name), dtype)
            for name, dtype in PROVIDER_FIELDS[provider].items()}


def stored_field(series: pd.Series | pa.ChunkedArray, dtype: str, name: str | None = None,
                 ) -> pa.Array:
    """A stored typed field column (a pandas column, or the Arrow column as read, which
    converts to the same array without a pandas frame between) as its field's Arrow type."""
    if isinstance(series, pd.Series):
        name = str(series.name)
    array = series if isinstance(series, pa.ChunkedArray) else pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    try:
        return array.cast(ARROW_TYPES[dtype])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(f"stored column {name!r} does not hold {dtype} values: "
                         f"{exc}") from None


def arrow_strings(series: pd.Series) -> pa.Array:
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_null(array.type):
        return array.cast(pa.large_string())
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise ValueError(f"column {series.name!r} must hold strings, got {array.type}")
    return array


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


def pandas_array(values: pa.Array | pa.ChunkedArray, dtype: str,
                 ) -> pd.api.extensions.ExtensionArray:
    if is_list(dtype):
        return pd.arrays.ArrowExtensionArray(values)
    return values.to_pandas(types_mapper=PANDAS_TYPES.get).array
