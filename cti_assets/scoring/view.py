"""Read access to a merged frame for the rules: masked numeric, flag, text and list columns,
each computed once per frame and without per-row Python objects where Arrow can avoid them."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cti_assets.providers.base import (
    ALL_PROVIDERS,
    NETWORK_CONTEXT,
    NOT_FOUND,
    OK,
    PROVIDER_LABELS,
    SKIP_OUT_OF_SCOPE,
    SKIPPED,
)
from cti_assets.providers.fields import PROVIDER_SCOPE, column
from cti_assets.scoring.text import LARGE, const, join_rows
from cti_assets.tables import OBSERVABLE_OK, OBSERVABLE_SKIPPED

T = TypeVar("T")


class View:
    """Read access to a merged frame: masked numeric, flag, text and list columns."""

    def __init__(self, merged: pd.DataFrame):
        positional = merged.index.equals(pd.RangeIndex(len(merged)))
        self.frame = merged if positional else merged.reset_index(drop=True)  # no copy if so
        self.size = len(self.frame)
        self._cache: dict = {}
        self.stix_ids = self.arrow("stix_id")
        if "status" in self.frame.columns:
            self.scored = self.equals("status", OBSERVABLE_OK)
        else:
            self.scored = np.ones(self.size, dtype=bool)
        self.providers = [p for p in ALL_PROVIDERS if column(p, "status") in self.frame.columns]

    @property
    def entity_types(self) -> np.ndarray:
        return self.objects("entity_type")

    def in_scope(self, provider: str) -> np.ndarray:
        """Rows whose entity type the provider accepts."""
        def load() -> np.ndarray:
            codes, types = self.codes("entity_type")
            accepted = np.isin(types, PROVIDER_SCOPE.get(provider, ()))
            return np.append(accepted, False)[codes]
        return self._memo(("in_scope", provider), load)

    def has(self, provider: str, *names: str) -> bool:
        return all(column(provider, name) in self.frame.columns for name in ("status", *names))

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A low-cardinality column as codes (-1 for null) and its distinct values."""
        def load() -> tuple[np.ndarray, np.ndarray]:
            if name not in self.frame.columns:
                return np.full(self.size, -1, dtype=np.int64), np.array([], dtype=object)
            codes, uniques = pd.factorize(self.frame[name], use_na_sentinel=True)
            return codes.astype(np.int64), np.asarray(list(uniques), dtype=object)
        return self._memo(("codes", name), load)

    def objects(self, name: str) -> np.ndarray:
        """A low-cardinality column as Python objects (None for null), one object per distinct
        value; from the column's codes, so a column is factorised once however it is read."""
        def load() -> np.ndarray:
            if name in self.frame.columns and self.frame[name].dtype == object:
                return self.frame[name].to_numpy(dtype=object, na_value=None)
            codes, uniques = self.codes(name)
            values = np.empty(len(uniques) + 1, dtype=object)
            values[:-1] = uniques
            values[-1] = None
            return values[codes]
        return self._memo(("objects", name), load)

    def equals(self, name: str, value: str) -> np.ndarray:
        """Rows whose (low-cardinality) column holds `value`, compared once per distinct value."""
        def load() -> np.ndarray:
            codes, uniques = self.codes(name)
            return np.append(uniques == value, False)[codes]
        return self._memo(("equals", name, value), load)

    def isin(self, name: str, values: Iterable[str]) -> np.ndarray:
        """Rows whose (low-cardinality) column holds one of `values`, compared per distinct
        value; for a provider field, only rows whose lookup is ok."""
        def load() -> np.ndarray:
            codes, uniques = self.codes(name)
            return np.append(np.isin(uniques, list(values)), False)[codes]
        return self._memo(("isin", name, tuple(values)), load)

    def status_text(self, provider: str) -> tuple[np.ndarray, list[str]]:
        """Codes per row into a short list of "status[:reason]" texts."""
        return self._memo(("status_text", provider), lambda: _status_text(
            *self.codes(column(provider, "status")), *self.codes(column(provider, "reason"))))

    def ok(self, provider: str) -> np.ndarray:
        return self._memo(("ok", provider),
                          lambda: self.equals(column(provider, "status"), OK) & self.scored)

    def num(self, provider: str, name: str) -> np.ndarray:
        """Floats, NaN where null, not ok, or the column is missing."""
        def load() -> np.ndarray:
            if not self.has(provider, name):
                return np.full(self.size, np.nan)
            values = self.frame[column(provider, name)]
            if not pd.api.types.is_numeric_dtype(values.dtype):  # numbers as stored: as they are
                values = pd.to_numeric(values, errors="coerce")
            values = values.to_numpy(dtype=float, na_value=np.nan).copy()
            values[~self.ok(provider)] = np.nan
            return values
        return self._memo(("num", provider, name), load)

    def flag(self, provider: str, name: str) -> np.ndarray:
        def load() -> np.ndarray:
            if not self.has(provider, name):
                return np.zeros(self.size, dtype=bool)
            values = self.frame[column(provider, name)].astype("boolean").fillna(False)
            return values.to_numpy(dtype=bool) & self.ok(provider)
        return self._memo(("flag", provider, name), load)

    def text(self, provider: str, name: str) -> np.ndarray:
        def load() -> np.ndarray:
            if not self.has(provider, name):
                return np.full(self.size, None, dtype=object)
            values = self.objects(column(provider, name)).copy()
            values[~self.ok(provider)] = None
            return values
        return self._memo(("text", provider, name), load)

    def items(self, provider: str, name: str) -> Items:
        """List items of ok rows (nulls left out), in row order."""
        def load() -> Items:
            if not self.has(provider, name):
                return _no_items()
            values = self.frame[column(provider, name)]
            return _arrow_items(values, self.ok(provider)) or _pandas_items(values,
                                                                           self.ok(provider))
        return self._memo(("items", provider, name), load)

    def arrow(self, name: str) -> pa.Array:
        """A column as an Arrow array (no Python objects for Arrow-backed columns)."""
        def load() -> pa.Array:
            if name not in self.frame.columns:
                return pa.nulls(self.size, LARGE)
            array = pa.array(self.frame[name], from_pandas=True)
            return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        return self._memo(("arrow", name), load)

    def chunks(self, name: str) -> list[pa.Array]:
        """A column's Arrow chunks, without the copy that joining them would cost."""
        if name not in self.frame.columns:
            return [pa.nulls(self.size, LARGE)]
        array = pa.array(self.frame[name], from_pandas=True)
        return array.chunks if isinstance(array, pa.ChunkedArray) else [array]

    def special_use(self) -> np.ndarray:
        return self.flag(NETWORK_CONTEXT, "is_special_use")

    def unscored_sentences(self, rows: np.ndarray) -> np.ndarray:
        """Why each of `rows` has no score: "observable skipped: ..." or "observable rejected:
        ..." (only for those rows: the others need none)."""
        reasons = self.objects("reason")[rows]
        reasons = np.where(pd.isna(reasons), "no reason given", reasons).astype(object)
        skipped = self.objects("status")[rows] == OBSERVABLE_SKIPPED
        verbs = np.where(skipped, "observable skipped: ", "observable rejected: ").astype(object)
        return (verbs + reasons).astype(object)

    def status_json(self) -> pa.Array:
        """{"provider": "status[:reason]", ...} per row, built once per distinct combination."""
        if not self.providers:
            return const("{}", self.size)
        combined = np.zeros(self.size, dtype=np.int64)
        per_provider = []
        for provider in self.providers:
            codes, texts = self.status_text(provider)
            combined = combined * (len(texts) + 1) + codes
            per_provider.append((provider, codes, texts))
        row_codes, uniques = pd.factorize(combined)
        first_rows = np.zeros(len(uniques), dtype=np.int64)
        first_rows[row_codes[::-1]] = np.arange(self.size)[::-1]  # a row of each combination
        documents = [
            json.dumps({p: texts[codes[row]] for p, codes, texts in per_provider},
                       separators=(",", ":"))
            for row in first_rows
        ]
        return pa.array(documents, type=LARGE).take(pa.array(row_codes))

    def gaps(self) -> pa.Array:
        """Providers in scope that gave no answer (skipped, deferred, error, no row)."""
        rows, texts = [], []
        for provider in self.providers:
            status, reason = column(provider, "status"), column(provider, "reason")
            out_of_scope = self.equals(status, SKIPPED) & self.equals(reason, SKIP_OUT_OF_SCOPE)
            gap = (self.in_scope(provider) & self.scored & ~self.equals(status, OK)
                   & ~self.equals(status, NOT_FOUND) & ~out_of_scope)
            if not gap.any():
                continue
            codes, labels = self.status_text(provider)
            named = pa.array([f"{PROVIDER_LABELS[provider]} {t}" for t in labels], type=LARGE)
            rows.append(np.flatnonzero(gap))
            texts.append(named.take(pa.array(codes[gap])))
        return join_rows(self.size, rows, texts, ", ")

    def _memo(self, key: Hashable, load: Callable[[], T]) -> T:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]


class Items(NamedTuple):
    """The items of a list column: row of each (ascending) and its index into `values`."""

    rows: np.ndarray
    codes: np.ndarray
    values: np.ndarray  # Python objects


def _no_items() -> Items:
    empty = np.zeros(0, dtype=np.int64)
    return Items(empty, empty, np.zeros(0, dtype=object))


_ARROW_ITEM_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer)


def _arrow_items(values: pd.Series, ok: np.ndarray) -> Items | None:
    """Items via Arrow, each distinct value made a Python object once; None when the column is
    not a list of strings or integers (those keep pandas' own conversion of each item)."""
    try:
        lists = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)) or not any(
            is_type(lists.type.value_type) for is_type in _ARROW_ITEM_TYPES):
        return None
    flat = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    keep = ok[rows] & flat.is_valid().to_numpy(zero_copy_only=False)
    encoded = flat.filter(pa.array(keep)).dictionary_encode()
    distinct = np.empty(len(encoded.dictionary), dtype=object)
    distinct[:] = encoded.dictionary.to_pylist()
    return Items(rows[keep], encoded.indices.to_numpy().astype(np.int64), distinct)


def _pandas_items(values: pd.Series, ok: np.ndarray) -> Items:
    exploded = values[ok].explode()
    exploded = exploded[exploded.notna()]
    return Items(exploded.index.to_numpy(dtype=np.int64), np.arange(len(exploded)),
                 exploded.to_numpy(dtype=object))


def _status_text(status_codes: np.ndarray, statuses: np.ndarray, reason_codes: np.ndarray,
                 reasons: np.ndarray) -> tuple[np.ndarray, list[str]]:
    pair = (status_codes + 1) * (len(reasons) + 1) + (reason_codes + 1)
    codes, pairs = pd.factorize(pair)
    texts = []
    for key in pairs:
        status_i, reason_i = divmod(int(key), len(reasons) + 1)
        text = statuses[status_i - 1] if status_i else "no lookup row"
        reason = reasons[reason_i - 1] if reason_i else None
        texts.append(f"{text}:{reason}" if reason else str(text))
    return codes.astype(np.int64), texts
