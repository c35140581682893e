"""Column-wise text building for scores: numbers, JSON values, phrases, per-row joins.

Components and explanations are text for every one of up to a million rows. Building them
with Python strings costs seconds and gigabytes; Arrow's string kernels build them in
contiguous buffers, so these helpers take and return `pyarrow` large-string arrays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

LARGE = pa.large_string()
_TOKEN = re.compile(r"[0-9A-Za-z_.:\-]*")


def const(text: str, size: int) -> pa.Array:
    """The same text `size` times."""
    return pa.nulls(size, LARGE).fill_null(text)


def from_objects(values) -> pa.Array:
    """Python strings (None for null) as an Arrow array."""
    if isinstance(values, pa.Array):
        return values.cast(LARGE)
    return pa.array(np.asarray(values, dtype=object), type=LARGE, from_pandas=True)


def cat(*parts) -> pa.Array:
    """Element-wise concatenation of arrays and constant strings (null if any part is null)."""
    args = [pa.scalar(p, LARGE) if isinstance(p, str) else from_objects(p) for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", LARGE))


def where(mask: np.ndarray, if_true, if_false) -> pa.Array:
    def arg(value):
        return pa.scalar(value, LARGE) if isinstance(value, str) else from_objects(value)

    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), arg(if_true), arg(if_false))


def labels(values) -> pa.Array:
    """Low-cardinality Python strings (e.g. verdicts) as Arrow, encoded once per value."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object), dtype=object))
    return pa.array(list(uniques) + [None], type=LARGE).take(pa.array(codes))


def ints(values) -> pa.Array:
    """Rounded integers as text, "?" for missing."""
    array = np.atleast_1d(np.asarray(values, dtype=float))
    missing = np.isnan(array)
    rounded = np.floor(np.nan_to_num(array) + 0.5).astype(np.int64)
    return pa.array(rounded, mask=missing).cast(LARGE).fill_null("?")


def decimal1(values) -> pa.Array:
    """Numbers rounded to one decimal, as JSON numbers ("12.5", "-3", "0")."""
    array = np.round(np.nan_to_num(np.asarray(values, dtype=float)), 1) + 0.0  # no "-0"
    return pa.array(array).cast(LARGE)


def json_text(values) -> pa.Array:
    """JSON text of each value ("null" for missing), encoded once per distinct value."""
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    encoded = [json.dumps(_plain(value)) for value in uniques] + ["null"]
    return pa.array(encoded, type=LARGE).take(pa.array(codes))


def quoted_tokens(values) -> pa.Array:
    """JSON text of digests and similar plain tokens, quoted without per-value encoding."""
    strings = from_objects(values)
    plain = pc.match_substring_regex(strings, f"^{_TOKEN.pattern}$").fill_null(False)
    quoted = cat('"', strings, '"')
    if pc.all(pc.or_(plain, pc.is_null(strings))).as_py() is not False:
        return quoted.fill_null("null")
    encoded = json_text(strings.to_numpy(zero_copy_only=False))
    return pc.if_else(plain, quoted, encoded).fill_null("null")


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
    may also simply be the list of texts. Rows no part covers get
    `empty`. Slots are computed without sorting, and intermediates are freed as soon as
    possible: at a million rows each copy of the text is hundreds of megabytes.
    """
    counts = np.zeros(size, dtype=np.int64)
    for part in rows:
        counts[part] += 1
    bare = np.flatnonzero(counts == 0)
    counts[bare] = 1
    offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    filled = offsets[:-1].copy()
    order = np.empty(offsets[-1], dtype=np.int64)
    texts = []
    start = 0
    for index, part in enumerate(rows):
        slots = filled[part]
        position = slots - offsets[part]
        last = slots == offsets[part + 1] - 1
        made = build[index] if isinstance(build, list) else build(index, position, last)
        texts.append(made.cast(LARGE))
        order[slots] = np.arange(start, start + part.size)
        filled[part] += 1
        start += part.size
    order[offsets[bare]] = np.arange(start, start + bare.size)
    texts.append(const(empty, bare.size))
    fragments = pa.concat_arrays(texts)
    del texts
    ordered = fragments.take(pa.array(order))
    del fragments, order
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), ordered)
    del ordered
    return pc.binary_join(lists, pa.scalar(separator, LARGE))


def to_pandas(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    """A pandas "string" array over the Arrow buffers (no copy to Python objects)."""
    return pd.arrays.ArrowStringArray(array.cast(LARGE))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
