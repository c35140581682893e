"""The one error type the terminal commands raise for a person to read (one line, exit 2)."""


class CliError(Exception):
    """An error meant for the person at the terminal."""
