"""Pure helpers of the HTTP layer: redaction, path segments, Retry-After, quota wording."""

from __future__ import annotations

import email.utils

import pytest

from cti_assets.providers.http import (
    HttpAnswer,
    error_text,
    path_segment,
    quota_window_of,
    redact,
    register_secret,
    retry_after_seconds,
)


@pytest.mark.parametrize("text", [
    "https://api.shodan.io/shodan/host/1.1.1.1?key=abcDEF123",
    "https://api.securitytrails.com/v1/domain/x.com?apikey=abcDEF123&x=1",
    "{'x-apikey': 'abcDEF123', 'Accept': 'application/json'}",
    "url=/check%3Fkey%3DabcDEF123",
])
def test_redact_removes_key_values(text):
    assert "abcDEF123" not in redact(text)
    assert "REDACTED" in redact(text)


def test_registered_secret_is_removed_anywhere():
    register_secret("zz-registered-9876")
    assert "zz-registered-9876" not in redact("saw zz-registered-9876 in a body")
    assert redact("a monkey=banana stays") == "a monkey=banana stays"


@pytest.mark.parametrize("value", ["a/b", "x?y", "h#f", "50%", "sp ace", "cr\r\nlf", "é"])
def test_path_segment_has_no_separators(value):
    segment = path_segment(value)
    assert not set("/?# \r\n") & set(segment)


@pytest.mark.parametrize("value", ["", " ", ".", "..", " .. "])
def test_path_segment_refuses_dot_and_empty_segments(value):
    with pytest.raises(ValueError):
        path_segment(value)


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds({"retry-after": when}, now=1_000_000) == pytest.approx(30)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(("text", "window"), [
    ("Daily rate limit of 1000 requests exceeded for this endpoint.", "day"),
    ("You have hit your daily rate limit of 100 requests per day.", "day"),
    ("You've exceeded the usage limits for your account.", "month"),
    ("Insufficient query credits, please wait for the monthly limit to reset.", "month"),
    ("Request rate limit reached (1 request/ second). Please wait a second", None),
    ("You've hit the rate limit for this endpoint.", None),
    ("TooManyRequestsError Too many requests", None),
])
def test_quota_window_of_provider_messages(text, window):
    assert quota_window_of(text) == window


def test_error_text_reads_each_envelope():
    def text(body: bytes) -> str:
        return error_text(HttpAnswer(400, {}, body, 1.0))

    assert text(b'{"error": {"code": "NotFoundError", "message": "m"}}') == "NotFoundError m"
    assert text(b'{"error": "No information available for that IP."}').startswith("No info")
    assert text(b'{"errors": [{"detail": "Authentication failed.", "status": 401}]}') == (
        "Authentication failed.")
    assert text(b'{"message": "Unauthorized"}') == "Unauthorized"
    assert text(b'{"detail": "Not Found"}') == "Not Found"
    assert text(b"<html>\r\n502</html>") == "<html> 502</html>"


def test_quota_reset_time_prefers_the_reset_header():
    import time

    from cti_assets.providers.http import _reset_time

    soon = int(time.time()) + 3600
    answer = HttpAnswer(429, {"x-ratelimit-reset": str(soon)}, b"{}", 1.0)
    assert int(_reset_time(answer, 99).timestamp()) == soon
    later = _reset_time(HttpAnswer(429, {}, b"{}", 1.0), 120)
    assert 100 < later.timestamp() - time.time() <= 120
    assert _reset_time(HttpAnswer(429, {"x-ratelimit-reset": "1"}, b"{}", 1.0), None) is None
