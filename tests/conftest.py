"""Every test leaves the process environment as it found it.

Commands under test (demo, dev, enrich --sandbox-port) point the providers at the sandbox
through os.environ, as they must for the runs they start; without this, the sandbox's base URLs
and placeholder keys would reach every later test (which then looks up at the sandbox's
endpoint, keeps its rate-limit state under the sandbox's name, and so on).
"""

import os

import pytest


@pytest.fixture(autouse=True)
def environment_put_back():
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
