"""ProviderSettings defaults, environment overlay and the README table."""

from __future__ import annotations

import pytest

from cti_assets.providers import base
from cti_assets.providers.config import (
    DEFAULTS,
    KEY_VARS,
    TUNING_VARS,
    URL_VARS,
    config_table_markdown,
    settings_from_env,
)


def test_defaults_are_the_free_tiers_and_real_urls():
    vt = DEFAULTS[base.VIRUSTOTAL]
    assert (vt.per_minute, vt.per_day, vt.per_month) == (4, 500, 15_500)
    assert vt.base_url == "https://www.virustotal.com/api/v3"
    assert DEFAULTS[base.ABUSEIPDB].per_day == 1_000
    assert DEFAULTS[base.SHODAN].per_second == 1.0
    assert DEFAULTS[base.SECURITYTRAILS].per_month == 50
    assert DEFAULTS[base.GREYNOISE].base_url == "https://api.greynoise.io"
    for settings in DEFAULTS.values():
        assert settings.max_tlp == "TLP:AMBER" and settings.timeout_s > 0
        assert settings.api_key is None
        assert settings.ttl_for("StixFile") == 30 * 86_400
        assert settings.ttl_for("Domain-Name") == 3 * 86_400
        assert settings.ttl_for("IPv4-Addr", found=False) == 6 * 3600


def test_env_overlay():
    env = {
        "VIRUSTOTAL_API_KEY": " vt-key-42 ",
        "VIRUSTOTAL_BASE_URL": "http://127.0.0.1:1/vt",
        "VIRUSTOTAL_PER_MINUTE": "30",
        "VIRUSTOTAL_MAX_TLP": "TLP:GREEN",
        "VIRUSTOTAL_TIMEOUT_S": "2.5",
    }
    settings = settings_from_env(base.VIRUSTOTAL, env)
    assert settings.api_key == "vt-key-42" and settings.base_url == "http://127.0.0.1:1/vt"
    assert settings.per_minute == 30 and settings.max_tlp == "TLP:GREEN"
    assert settings.timeout_s == 2.5 and settings.per_day == 500
    assert DEFAULTS[base.VIRUSTOTAL].per_minute == 4  # defaults untouched
    assert "vt-key-42" not in repr(settings)


def test_needs_key():
    assert not settings_from_env(base.INTERNETDB, {}).needs_key
    assert not settings_from_env(base.GREYNOISE, {}).needs_key
    assert settings_from_env(base.GREYNOISE, {"GREYNOISE_PAID": "true"}).needs_key
    assert settings_from_env(base.SHODAN, {}).needs_key


def test_bad_values_name_the_variable():
    with pytest.raises(ValueError, match="ABUSEIPDB_PER_DAY"):
        settings_from_env(base.ABUSEIPDB, {"ABUSEIPDB_PER_DAY": "lots"})
    with pytest.raises(ValueError, match="unknown provider"):
        settings_from_env("nope", {})


def test_table_documents_every_variable():
    table = config_table_markdown()
    names = [v for v in KEY_VARS.values() if v] + list(URL_VARS.values())
    names += [f"{p.upper()}_{suffix}" for p in DEFAULTS for suffix in TUNING_VARS]
    for name in names + ["GREYNOISE_PAID", "CTI_RATELIMIT_REDIS_URL"]:
        assert f"`{name}`" in table
