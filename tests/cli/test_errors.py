"""How a value, however long, is shown in the one-line error of a command."""

from __future__ import annotations

from cti_assets.cli.errors import LINE_LIMIT, VALUE_LIMIT, quoted, readable_line


def test_a_value_up_to_the_limit_is_quoted_whole():
    value = "x" * VALUE_LIMIT
    assert quoted(value) == repr(value)
    assert quoted("it's\n") == repr("it's\n")


def test_a_longer_value_is_cut_and_its_full_length_named():
    assert quoted("a" * 100_000) == f"'{'a' * VALUE_LIMIT}…' (100000 characters)"


def test_a_message_becomes_one_line():
    assert readable_line("2 errors\n  field a: missing\n") == "2 errors field a: missing"


def test_an_over_long_message_keeps_its_start_and_its_end():
    message = f"'{'a' * 100_000}' is not an IP address"
    line = readable_line(message)
    assert len(line) <= LINE_LIMIT
    left_out = len(message) - 2 * VALUE_LIMIT
    assert line == (f"{message[:VALUE_LIMIT]}… ({left_out} characters left out) …"
                    f"{message[-VALUE_LIMIT:]}")
    assert line.endswith("' is not an IP address")


def test_a_failed_step_is_told_by_its_innermost_cause_with_keys_redacted():
    from dataclasses import dataclass

    from cti_assets.cli.runs import failure_line
    from cti_assets.providers.http import register_secret

    @dataclass
    class Error:
        message: str
        cls_name: str | None
        cause: Error | None = None

    register_secret("k-7f3e9a1c55d2")
    inner = Error('Could not connect to "http://s3.test/b?apikey=k-7f3e9a1c55d2"\n',
                  "EndpointConnectionError")
    outer = Error('Error occurred while handling output "result" of step "observables":',
                  "DagsterExecutionHandleOutputError", inner)
    line = failure_line(outer)
    assert line.startswith('EndpointConnectionError: Could not connect to "http://s3.test/b?')
    assert "k-7f3e9a1c55d2" not in line and "\n" not in line
    assert failure_line(Error("builtins.ValueError: bad", "ValueError")) == "ValueError: bad"
    assert failure_line(Error("dagster._core.definitions.events.Failure: no store", "Failure")) \
        == "no store"
    assert failure_line(None) == "no error recorded"
