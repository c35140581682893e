"""The one error type the terminal commands raise for a person to read (one line, exit 2), and
the one way a value, however long, is shown in such a line."""

VALUE_LIMIT = 200  # characters of a value shown in an error line
LINE_LIMIT = 1000  # characters of an error line, values quoted elsewhere included


class CliError(Exception):
    """An error meant for the person at the terminal."""


def quoted(value: str) -> str:
    """`value` as repr() shows it; past VALUE_LIMIT characters cut, with its full length named
    (settings.shown, which core modules' errors use too)."""
    from cti_assets.envvars import shown

    return shown(value, VALUE_LIMIT)


def readable_line(message: str) -> str:
    """`message` on one line; past LINE_LIMIT characters (a long value quoted by code that does
    not use quoted(), e.g. in a core module's error) its middle is left out, with its length."""
    line = " ".join(message.split())
    if len(line) <= LINE_LIMIT:
        return line
    keep = VALUE_LIMIT
    return f"{line[:keep]}… ({len(line) - 2 * keep} characters left out) …{line[-keep:]}"
