"""Argument types of the terminal commands: each turns a bad value into one line that says
what was expected, before a command starts anything or writes anything."""

from __future__ import annotations

import argparse
import json
import re
from datetime import date

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def whole_number(text: str) -> int:
    """A whole number, 0 or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def positive_number(text: str) -> int:
    """A whole number, 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def parse_day(text: str) -> date:
    """A YYYY-MM-DD day (the form of the daily partition keys); ValueError otherwise."""
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def day(text: str) -> str:
    """A daily partition key, YYYY-MM-DD."""
    try:
        return parse_day(text).isoformat()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def rate_limits(text: str) -> dict[str, float]:
    """A JSON object of provider -> requests per second, each a positive number."""
    from cti_assets.sandbox import PROVIDERS

    example = '{"virustotal": 4}'
    try:
        limits = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON; e.g. {example}") from None
    if not isinstance(limits, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a JSON object of provider to requests per second; e.g. {example}"
        )
    for provider, rps in limits.items():
        if provider not in PROVIDERS:
            raise argparse.ArgumentTypeError(
                f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}"
            )
        if isinstance(rps, bool) or not isinstance(rps, int | float) or not rps > 0:
            raise argparse.ArgumentTypeError(
                f"the limit of {provider} must be a positive number of requests per second"
            )
    return {provider: float(rps) for provider, rps in limits.items()}


def existing_file(text: str) -> str:
    """A path to a file that exists (checked before anything is opened or created)."""
    from pathlib import Path

    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    return text
