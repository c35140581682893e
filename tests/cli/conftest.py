"""Fixtures of the CLI tests: an isolated data directory, and one provider sandbox per module."""

import pytest

from tests.cli.support import isolate


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    isolate(monkeypatch, path)
    return path
