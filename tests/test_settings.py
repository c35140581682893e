"""Settings read from the environment: defaults, and clear errors for bad values."""

from __future__ import annotations

import pytest

from cti_assets import settings


def test_batch_rows_default_override_and_bad_values(monkeypatch):
    monkeypatch.delenv("CTI_BATCH_ROWS", raising=False)
    assert settings.batch_rows() == settings.DEFAULT_BATCH_ROWS
    monkeypatch.setenv("CTI_BATCH_ROWS", " 5000 ")
    assert settings.batch_rows() == 5000
    for bad in ("0", "-3", "1e5", "many"):
        monkeypatch.setenv("CTI_BATCH_ROWS", bad)
        with pytest.raises(ValueError, match="CTI_BATCH_ROWS must be a positive whole number"):
            settings.batch_rows()
