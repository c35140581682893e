"""Argument types of the terminal commands: each turns a bad value into one line that says
what was expected, before a command starts anything or writes anything."""

from __future__ import annotations

import argparse
import json
import re
from datetime import date

from cti_assets.cli.errors import quoted
from cti_assets.envvars import whole

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _whole(text: str) -> int | None:
    return whole(text.strip())


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    port = _whole(text)
    if port is None or port > 65535:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a port number (0-65535)")
    return port


def whole_number(text: str) -> int:
    """A whole number, 0 or more."""
    number = _whole(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number >= 0")
    return number


def positive_number(text: str) -> int:
    """A whole number, 1 or more."""
    number = _whole(text)
    if number is None or number < 1:
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number >= 1")
    return number


def parse_day(text: str) -> date:
    """A YYYY-MM-DD day (the form of the daily partition keys); ValueError otherwise."""
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{quoted(text)} is not a date (YYYY-MM-DD)") from None


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
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not JSON; e.g. {example}") from None
    if not isinstance(limits, dict):
        raise argparse.ArgumentTypeError(
            f"{quoted(text)} is not a JSON object of provider to requests per second; "
            f"e.g. {example}"
        )
    for provider, rps in limits.items():
        if provider not in PROVIDERS:
            raise argparse.ArgumentTypeError(
                f"unknown provider {quoted(provider)}; known: {', '.join(sorted(PROVIDERS))}"
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
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as error:  # e.g. a name longer than the file system allows
        raise argparse.ArgumentTypeError(f"{quoted(text)}: {error.strerror}") from None
    if not exists:
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not is_file:
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    return text
