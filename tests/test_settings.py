"""Settings read from the environment: defaults, and clear errors for bad values."""

from __future__ import annotations

import pytest

from cti_assets import envvars, settings


def test_batch_rows_default_override_and_bad_values(monkeypatch):
    monkeypatch.delenv("CTI_BATCH_ROWS", raising=False)
    assert settings.batch_rows() == settings.DEFAULT_BATCH_ROWS
    monkeypatch.setenv("CTI_BATCH_ROWS", " 5000 ")
    assert settings.batch_rows() == 5000
    for bad in ("0", "-3", "1e5", "many"):
        monkeypatch.setenv("CTI_BATCH_ROWS", bad)
        with pytest.raises(ValueError, match="CTI_BATCH_ROWS must be a positive whole number"):
            settings.batch_rows()


# --- check_environment: every setting, one line, before anything starts -------------------------

FREE_FORM = {"CTI_DATA_DIR", "CTI_OUTPUTS_BASE"}  # any path or URL


def settings_read_here() -> list[str]:
    """Every CTI_* variable cti_assets/settings.py reads."""
    import inspect
    import re

    return sorted(set(re.findall(r'"(CTI_[A-Z_]+)"', inspect.getsource(settings))))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No CTI_* or provider tuning variable set; the data directory not created yet."""
    import os

    from cti_assets.providers.config import DEFAULTS, TUNING_VARS, env_prefix

    for name in list(os.environ):
        if name.startswith("CTI_") or any(name == f"{env_prefix(p)}_{s}"
                                          for p in DEFAULTS for s in TUNING_VARS):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_a_clean_environment_passes_and_nothing_is_created(clean_env):
    settings.check_environment()
    assert not clean_env.exists()


def test_every_setting_of_the_module_is_checked_and_named(clean_env, monkeypatch):
    names = [name for name in settings_read_here() if name not in FREE_FORM]
    assert len(names) >= 13
    for name in names:
        monkeypatch.setenv(name, "bogus")
    with pytest.raises(settings.SettingsError) as error:
        settings.check_environment()
    message = str(error.value)
    assert "\n" not in message
    assert [name for name in names if f"{name} must be " not in message] == []
    assert message.count("got 'bogus'") == len(names)
    assert not clean_env.exists()


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("CTI_UNMARKED_TLP", "TLP:PURPLE", "TLP:AMBER"),
    ("VIRUSTOTAL_PER_MINUTE", "abc", "a positive whole number"),
    ("SHODAN_PER_SECOND", "0", "a positive number"),
    ("ABUSEIPDB_TIMEOUT_S", "nan", "a positive number"),
    ("VIRUSTOTAL_MAX_RETRIES", "-1", "a whole number"),
    ("VIRUSTOTAL_MAX_TLP", "TLP:PURPLE", "TLP:AMBER"),
    ("CTI_STATE_SCHEMA", "Bad-Schema", "lower-case identifier"),
    ("GREYNOISE_PAID", "perhaps", "one of 1, true"),
    ("OPENCTI_SSL_VERIFY", "maybe", "one of 1, true"),
])
def test_settings_read_elsewhere_are_checked_too(clean_env, monkeypatch, name, value, allowed):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingsError) as error:
        settings.check_environment()
    assert name in str(error.value) and value in str(error.value)
    assert allowed in str(error.value)


def test_a_data_directory_that_is_a_file_is_named(clean_env, monkeypatch):
    clean_env.write_text("not a directory")
    with pytest.raises(settings.SettingsError, match="CTI_DATA_DIR must be a directory"):
        settings.check_environment()


def test_partitions_start_must_be_a_day(monkeypatch):
    monkeypatch.delenv("CTI_PARTITIONS_START", raising=False)
    assert settings.partitions_start() == "2026-01-01"
    monkeypatch.setenv("CTI_PARTITIONS_START", "2026-03-04")
    assert settings.partitions_start() == "2026-03-04"
    for bad in ("garbage", "2026-02-30", "2026-3-4", "20260304"):
        monkeypatch.setenv("CTI_PARTITIONS_START", bad)
        with pytest.raises(settings.SettingsError) as error:
            settings.partitions_start()
        assert str(error.value) == (
            f"CTI_PARTITIONS_START must be a date, YYYY-MM-DD, got {bad!r}")


def test_sensor_default_on_refuses_a_word_it_does_not_know(monkeypatch):
    for text, expected in (("", False), ("1", True), ("On", True), ("no", False)):
        monkeypatch.setenv("CTI_SENSOR_DEFAULT_ON", text)
        assert settings.sensor_default_on() is expected
    monkeypatch.setenv("CTI_SENSOR_DEFAULT_ON", "ture")  # was silently off
    with pytest.raises(settings.SettingsError, match="CTI_SENSOR_DEFAULT_ON must be one of"):
        settings.sensor_default_on()


@pytest.mark.parametrize("bad", ["²", "9" * 5000, "1.5"], ids=["superscript", "long", "decimal"])
def test_whole_numbers_name_their_variable_whatever_the_text(monkeypatch, bad):
    monkeypatch.setenv("CTI_REENRICH_DAYS", bad)
    with pytest.raises(settings.SettingsError) as error:
        settings.reenrich_days()
    assert str(error.value).startswith("CTI_REENRICH_DAYS must be a whole number >= 0, got ")
    assert len(str(error.value)) < 200  # a long value is shortened, its length named
    if len(bad) > envvars.SHOWN_LIMIT:
        assert f"({len(bad)} characters)" in str(error.value)


def test_the_source_is_local_or_opencti(clean_env, monkeypatch):
    monkeypatch.delenv("OPENCTI_URL", raising=False)
    assert settings.source_kind() == "local"
    monkeypatch.setenv("OPENCTI_URL", "http://127.0.0.1:8080")
    assert settings.source_kind() == "opencti"
    monkeypatch.setenv("CTI_SOURCE", "Local")
    assert settings.source_kind() == "local"
    monkeypatch.setenv("CTI_SOURCE", "postgres")
    with pytest.raises(settings.SettingsError, match="CTI_SOURCE must be one of local, opencti"):
        settings.check_environment()


def test_the_definitions_name_a_bad_provider_number(clean_env, monkeypatch):
    from cti_assets.defs.resources import provider_resource

    monkeypatch.setenv("SHODAN_PER_SECOND", "fast")
    with pytest.raises(settings.SettingsError,
                       match="SHODAN_PER_SECOND must be a positive number, got 'fast'"):
        provider_resource("shodan")


def test_a_first_partition_after_today_is_refused(clean_env, monkeypatch):
    from datetime import UTC, datetime, timedelta

    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    monkeypatch.setenv("CTI_PARTITIONS_START", tomorrow)
    with pytest.raises(settings.SettingsError,
                       match="CTI_PARTITIONS_START must be a day no later than today"):
        settings.partitions_start()
    monkeypatch.setenv("CTI_PARTITIONS_START", datetime.now(UTC).date().isoformat())
    assert settings.partitions_start() == datetime.now(UTC).date().isoformat()
