"""Reading numbers out of provider JSON, one way for every client.

A JSON count is an int or a float; a boolean is not a count (Python's bool is an int), and a
string is not one either (abuse.ch sends counts as strings: see abusech.to_int).
"""

from __future__ import annotations

from typing import Any


def json_int(value: Any) -> int | None:
    """`value` as an int when JSON gave a number (not a boolean); None otherwise."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
