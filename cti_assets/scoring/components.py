"""A score's evidence items (`components`): the stored type, and reading them back.

Write-back, explain and the checks read a row's evidence through `parse_components`, whichever
form it was stored in (a typed Parquet list now, JSON text in earlier versions).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa

# One evidence item of `components`: the value as JSON, since values differ in type.
COMPONENT_TYPE = pa.list_(pa.struct([
    ("rule", pa.string()),
    ("provider", pa.string()),
    ("field", pa.string()),
    ("value_json", pa.string()),
    ("contribution", pa.float64()),
    ("raw_digest", pa.string()),
]))


def parse_components(components: object) -> list[dict]:
    """The evidence items of one row's `components` (rule, provider, field, value, contribution,
    raw_digest): a list of COMPONENT_TYPE items, or their JSON text as earlier versions stored
    it."""
    if isinstance(components, str):
        return json.loads(components) if components else []
    if components is None or components is pd.NA or (
            isinstance(components, float) and np.isnan(components)):
        return []
    return [_component(dict(item)) for item in cast(Iterable, components)]


def _component(item: dict) -> dict:
    value = item.pop("value_json", None)
    contribution = item.get("contribution")
    if isinstance(contribution, float) and contribution.is_integer():
        contribution = int(contribution)  # as the JSON text of the number reads back
    return {"rule": item.get("rule"), "provider": item.get("provider"),
            "field": item.get("field"), "value": None if value is None else json.loads(value),
            "contribution": contribution, "raw_digest": item.get("raw_digest")}
