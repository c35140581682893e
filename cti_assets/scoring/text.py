"""Column-wise text building for scores: numbers, JSON values, phrases, per-row joins.

Components and explanations are text for every one of up to a million rows. Building them
with Python strings costs seconds and gigabytes; Arrow's string kernels build them in
contiguous buffers, so these helpers take and return `pyarrow` large-string arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

LARGE = pa.large_string()

# A column of values: a list, a numpy array, a pandas Series or an Arrow array.
Column: TypeAlias = Any


def const(text: str, size: int) -> pa.Array:
    """The same text `size` times."""
    return pa.nulls(size, LARGE).fill_null(text)


def from_objects(values: Column) -> pa.Array:
    """Python strings (None for null) as an Arrow array."""
    if isinstance(values, pa.Array):
        return values.cast(LARGE)
    return pa.array(np.asarray(values, dtype=object), type=LARGE, from_pandas=True)


def cat(*parts: str | Column) -> pa.Array:
    """Element-wise concatenation of arrays and constant strings (null if any part is null)."""
    args = [pa.scalar(p, LARGE) if isinstance(p, str) else from_objects(p) for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", LARGE))


def where(mask: np.ndarray, if_true: str | Column, if_false: str | Column) -> pa.Array:
    def arg(value: str | Column) -> Any:
        return pa.scalar(value, LARGE) if isinstance(value, str) else from_objects(value)

    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), arg(if_true), arg(if_false))


def labels(values: Column) -> pa.Array:
    """Low-cardinality Python strings (e.g. verdicts) as Arrow, encoded once per value."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object), dtype=object))
    return pa.array(list(uniques) + [None], type=LARGE).take(pa.array(codes))


def ints(values: Column) -> pa.Array:
    """Rounded integers as text, "?" for missing."""
    array = np.atleast_1d(np.asarray(values, dtype=float))
    missing = np.isnan(array)
    rounded = np.floor(np.nan_to_num(array) + 0.5).astype(np.int64)
    return pa.array(rounded, mask=missing).cast(LARGE).fill_null("?")


def decimal1(values: Column) -> pa.Array:
    """Numbers rounded to one decimal, as JSON numbers ("12.5", "-3", "0")."""
    array = np.round(np.nan_to_num(np.asarray(values, dtype=float)), 1) + 0.0  # no "-0"
    return pa.array(array).cast(LARGE)


def json_text(values: Column) -> pa.Array:
    """JSON text of each value ("null" for missing), encoded once per distinct value."""
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    encoded = [json.dumps(_plain(value)) for value in uniques] + ["null"]
    return pa.array(encoded, type=LARGE).take(pa.array(np.where(codes < 0, len(uniques), codes)))


@dataclass(frozen=True)
class Layout:
    """Where each part's fragment sits when the fragments are laid out row after row.

    Parts are lists of distinct row positions; rows no part covers get one "bare" slot, which
    belongs to an extra last part. Building texts in slot order lets the row texts share one
    buffer (`by_row`) instead of being permuted and joined: at a million rows each copy of
    the text is hundreds of megabytes.
    """

    offsets: np.ndarray  # first slot of each row, and the slot count at the end
    source: np.ndarray  # per slot, its item in the parts' concatenation (bare rows last)
    part: np.ndarray  # per slot, its part (len(rows) for bare rows)
    row: np.ndarray  # per slot, its row
    last: np.ndarray  # per slot, whether it closes its row
    bare: np.ndarray  # the rows no part covers


def layout(size: int, rows: list[np.ndarray]) -> Layout:
    """Slots of `rows` (row positions per part), in part order within each row."""
    counts = np.bincount(np.concatenate([*rows, np.zeros(0, np.int64)]), minlength=size)
    bare = np.flatnonzero(counts == 0)
    counts[bare] = 1
    offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    filled = offsets[:-1].copy()
    source = np.empty(offsets[-1], dtype=np.int64)
    start = 0
    for part in [*rows, bare]:
        source[filled[part]] = np.arange(start, start + part.size)
        filled[part] += 1
        start += part.size
    sizes = [part.size for part in rows] + [bare.size]
    last = np.zeros(offsets[-1], dtype=bool)
    last[offsets[1:] - 1] = True
    part = np.repeat(np.arange(len(sizes)), sizes)[source]
    row = np.concatenate([*rows, bare])[source]
    return Layout(offsets, source, part, row, last, bare)


def gather(layout: Layout, texts: list[pa.Array]) -> pa.Array:
    """Per-part texts (in part order, one per item, bare rows last) put in slot order."""
    return pa.concat_arrays([t.cast(LARGE) for t in texts]).take(pa.array(layout.source))


def by_row(layout: Layout, fragments: pa.Array) -> pa.Array:
    """The texts of each row's slots run together, sharing the fragments' buffer; a row with a
    null fragment is null, as `binary_join` makes it."""
    fragments = fragments.cast(LARGE)
    size = len(layout.offsets) - 1
    validity = None
    if fragments.null_count:
        broken = np.flatnonzero(pc.is_null(fragments).to_numpy(zero_copy_only=False))
        valid = np.ones(size, dtype=bool)
        valid[np.searchsorted(layout.offsets, broken, side="right") - 1] = False
        validity = pa.array(valid).buffers()[1]
        fragments = fragments.fill_null("")
    start = fragments.offset
    ends = np.frombuffer(fragments.buffers()[1], dtype=np.int64)[start:start + len(fragments) + 1]
    offsets = pa.py_buffer(np.ascontiguousarray(ends[layout.offsets]))
    return pa.Array.from_buffers(LARGE, size, [validity, offsets, fragments.buffers()[2]])


def join_rows(
    size: int,
    rows: list[np.ndarray],
    build: Callable[[int, np.ndarray, np.ndarray], pa.Array] | list[pa.Array],
    separator: str,
    empty: str = "",
) -> pa.Array:
    """Per row, the texts of the parts that cover it, joined by `separator` in part order.

    `rows[k]` holds the distinct row positions part k covers; `build(k, position, last)` makes
    that part's texts, knowing for each of its rows its position in the row (0 = first) and
    whether it comes last (so brackets go inside the fragments, not in another pass); `build`
    may also simply be the list of texts. Rows no part covers get `empty`.
    """
    slots = layout(size, rows)
    slot_of = np.empty_like(slots.source)
    slot_of[slots.source] = np.arange(slots.source.size)
    texts = []
    start = 0
    for index, part in enumerate(rows):
        slot = slot_of[start:start + part.size]
        position = slot - slots.offsets[part]
        last = slots.last[slot]
        texts.append(build[index] if isinstance(build, list) else build(index, position, last))
        start += part.size
    texts.append(const(empty, slots.bare.size))
    ordered = gather(slots, texts)
    del texts
    if separator == "":
        return by_row(slots, ordered)
    lists = pa.LargeListArray.from_arrays(pa.array(slots.offsets), ordered)
    del ordered
    return pc.binary_join(lists, pa.scalar(separator, LARGE))


def to_pandas(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    """A pandas "string" array over the Arrow buffers (no copy to Python objects)."""
    return pd.arrays.ArrowStringArray(array.cast(LARGE))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
