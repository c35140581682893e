"""How an environment variable is read and refused: the one error type, and the one line naming
the variable, its value (shortened when long) and what is allowed. Kept apart from settings so
that the provider settings (providers/config.py), which settings checks, can use it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SHOWN_LIMIT = 80  # characters of a bad value shown in a settings error


class SettingsError(ValueError):
    """An environment setting with a value the project cannot use; its message is one line
    naming the variable, the value and what is allowed."""


def shown(value: str, limit: int = SHOWN_LIMIT) -> str:
    """`value` as repr() shows it, cut past `limit` characters with its length named:
    `'aaaa…' (100000 characters)`. The one way a long value is shown in a one-line error."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit] + '…'!r} ({len(value)} characters)"


def bad_setting(name: str, value: str, allowed: str) -> SettingsError:
    """The error of variable `name` set to `value`: `NAME must be <allowed>, got 'value'`."""
    return SettingsError(f"{name} must be {allowed}, got {shown(value)}")


def whole(text: str) -> int | None:
    """`text` as a whole number, or None. At most 18 ASCII digits: int() refuses 4,300 digits
    and more, and accepts digits like '²' that are no number to type."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def flag(name: str, default: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """A yes/no variable: one of TRUE_WORDS or FALSE_WORDS (any case), `default` when unset."""
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return default
    if text.lower() not in (*TRUE_WORDS, *FALSE_WORDS):
        raise bad_setting(name, text, f"one of {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}")
    return text.lower() in TRUE_WORDS
