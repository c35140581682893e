"""One provider sandbox per test module, reset around each test that uses it."""

import pytest

from cti_assets.sandbox import ProviderSandbox


@pytest.fixture(scope="module")
def sandbox():
    with ProviderSandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox):
    sandbox.reset()
    yield sandbox
    sandbox.reset()
