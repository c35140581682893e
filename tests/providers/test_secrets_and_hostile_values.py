"""API keys never leak, and hostile observable values never change a request's path."""

from __future__ import annotations

import logging
import sqlite3
import zlib
from dataclasses import replace

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti_assets import tables
from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.http import redact
from cti_assets.providers.ratelimit import SharedLimiter
from cti_assets.providers.registry import make_client
from cti_assets.providers.runner import lookup_frame

CANARY = "canary-7f3a9c1e55d0-SECRET"
KEY_VARS = ("VIRUSTOTAL_API_KEY", "SHODAN_API_KEY", "ABUSEIPDB_API_KEY", "GREYNOISE_API_KEY",
            "SECURITYTRAILS_API_KEY")  # fmt: skip
TARGETS = {
    base.VIRUSTOTAL: ("IPv4-Addr", "45.83.70.1"),
    base.SHODAN: ("IPv4-Addr", "45.83.70.2"),
    base.ABUSEIPDB: ("IPv4-Addr", "45.83.70.3"),
    base.GREYNOISE: ("IPv4-Addr", "45.83.70.4"),
    base.SECURITYTRAILS: ("Domain-Name", "canary-check.com"),
}


def _env(sb):
    return {**sb.base_urls, **dict.fromkeys(KEY_VARS, CANARY)}


def _frame(entity_type, values):
    rows = [{"stix_id": f"x--{i}", "entity_type": entity_type, "value": v,
             "normalized_value": v, "tlp": "TLP:GREEN", "status": "ok"}
            for i, v in enumerate(values)]  # fmt: skip
    return pd.DataFrame(rows, columns=list(tables.OBSERVABLE_COLUMNS))


class _ExplodingClient:
    """A client whose bug puts the key into an exception."""

    def __init__(self, key):
        self.key = key

    def fetch(self, entity_type, value):
        raise RuntimeError(f"boom with GET /x?key={self.key} and header x-apikey: {self.key}")

    def close(self):
        pass


def test_canary_key_appears_nowhere(sb, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    env = _env(sb)
    cache_path = tmp_path / "cache.sqlite"
    cache = ResponseCache(cache_path)
    outputs = []
    for provider, (entity_type, value) in TARGETS.items():
        conf = replace(settings_from_env(provider, env), timeout_s=0.3, max_retries=1,
                       breaker_failures=10,
                       backoff_base_s=0.01, backoff_max_s=0.02, max_workers=1)
        assert CANARY not in repr(conf)
        limiter = SharedLimiter(provider, {}, path=tmp_path / "rl.sqlite")
        sb.set_profile(value, "malicious")
        out, _ = lookup_frame(provider, _frame(entity_type, [value]), conf, cache=cache,
                              limiter=limiter)
        assert out.loc[0, "status"] == base.OK
        outputs.append(out.to_json())
        for fault in ("http_500", "hang", "hang", "html_error", "http_401"):
            sb.inject(provider, fault)
        others = [f"{value[:-1]}{i}" for i in range(5, 9)]
        if entity_type == "Domain-Name":
            others = [f"x{i}-{value}" for i in range(4)]
        out, _ = lookup_frame(provider, _frame(entity_type, others), conf, cache=cache,
                              limiter=limiter)
        assert set(out["status"]) == {base.ERROR}
        outputs.append(out.to_json())
        out, _ = lookup_frame(provider, _frame(entity_type, ["45.83.70.9"]), conf, cache=cache,
                              client=_ExplodingClient(CANARY))
        outputs.append(out.to_json())
        limiter.close()
    # connection errors print the URL, and Shodan's URL holds the key
    refused = replace(settings_from_env(base.SHODAN, env), base_url="http://127.0.0.1:9",
                      max_retries=0)
    result = make_client(base.SHODAN, refused).lookup("IPv4-Addr", "45.83.70.2")
    assert result.reason == base.ERR_TRANSIENT
    outputs.append(repr(result))
    cache.close()

    assert any(CANARY in str(r.headers) + str(r.query) for r in sb.requests)  # it was sent
    assert CANARY not in caplog.text
    for text in outputs:
        assert CANARY not in text
    with sqlite3.connect(cache_path) as conn:
        rows = conn.execute("SELECT * FROM answers").fetchall()
        stored = conn.execute("SELECT body, encoding FROM raw_bodies").fetchall()
    bodies = [zlib.decompress(b) if encoding == "zlib" else b for b, encoding in stored]
    assert rows and bodies and CANARY not in repr(rows)
    assert all(CANARY.encode() not in b for b in bodies)
    for path in tmp_path.iterdir():
        assert CANARY.encode() not in path.read_bytes(), path.name


def test_redact_handles_query_strings_headers_and_registered_keys():
    text = (f"GET https://api.shodan.io/shodan/host/1.2.3.4?key={CANARY}&minify=true; "
            f"{{'x-apikey': '{CANARY}'}} apikey={CANARY}")
    cleaned = redact(text)
    assert CANARY not in cleaned and "minify=true" in cleaned and "1.2.3.4" in cleaned
    assert redact("Wrong API key") == "Wrong API key"


_PIECES = st.one_of(
    st.sampled_from(list("/?#.%\r\n \t\\:@;=&+é\u202e") + ["%2F", "%2e%2E", "..", "../"]),
    st.characters(blacklist_categories=("Cs",)),
)
HOSTILE = st.lists(_PIECES, min_size=1, max_size=12).map("".join)
# provider, entity type, expected path prefix (segments before the value), allowed query keys
PATH_CASES = [
    (base.VIRUSTOTAL, "Domain-Name", "/virustotal/api/v3/domains/", set()),
    (base.VIRUSTOTAL, "StixFile", "/virustotal/api/v3/files/", set()),
    (base.VIRUSTOTAL, "Url", "/virustotal/api/v3/urls/", set()),
    (base.SHODAN, "IPv4-Addr", "/shodan/shodan/host/", {"key"}),
    (base.INTERNETDB, "IPv4-Addr", "/internetdb/", set()),
    (base.GREYNOISE, "IPv4-Addr", "/greynoise/v3/community/", set()),
    (base.SECURITYTRAILS, "Hostname", "/securitytrails/v1/domain/", set()),
]


@pytest.mark.parametrize(("provider", "entity_type", "prefix", "query_keys"), PATH_CASES)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(value=HOSTILE)
def test_hostile_values_stay_one_path_segment(sb, provider, entity_type, prefix, query_keys,
                                              value):
    sb.reset_log()
    conf = replace(settings_from_env(provider, {**sb.base_urls, **dict.fromkeys(KEY_VARS, "k")}),
                   max_retries=0)
    result = make_client(provider, conf).lookup(entity_type, value)
    assert result.status in base.STATUSES
    for record in sb.requests:
        assert record.path.startswith(prefix)
        rest = record.path[len(prefix):]
        assert rest and "/" not in rest and "?" not in rest and "#" not in rest
        assert rest not in (".", "..")
        assert set(record.query) <= query_keys
    if not sb.requests:
        assert result.reason == base.ERR_BAD_REQUEST


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(value=HOSTILE)
def test_hostile_values_travel_as_one_query_parameter(sb, value):
    sb.reset_log()
    env = {**sb.base_urls, **dict.fromkeys(KEY_VARS, "k")}
    conf = replace(settings_from_env(base.ABUSEIPDB, env), max_retries=0)
    make_client(base.ABUSEIPDB, conf).lookup("IPv4-Addr", value)
    for record in sb.requests:
        assert record.path == "/abuseipdb/api/v2/check"
        assert record.query["ipAddress"] == [value]
        assert set(record.query) == {"ipAddress", "maxAgeInDays", "verbose"}
