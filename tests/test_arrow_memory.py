"""Arrow allocates from jemalloc in every cti-assets process (cti_assets.arrow_memory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cti_assets.arrow_memory import DECAY_MS

REPO = Path(__file__).resolve().parent.parent

POOL_AFTER_OUR_IMPORT = (
    "import cti_assets, pyarrow as pa; pa.array(['x'] * 10); "
    "print(pa.default_memory_pool().backend_name)"
)
POOL_WHEN_PYARROW_CAME_FIRST = (
    "import pyarrow as pa; pa.array(['x'] * 10); import cti_assets; "
    "print(pa.default_memory_pool().backend_name)"
)
POOL_OF_A_CHILD = (
    "import cti_assets, subprocess, sys; print(subprocess.run([sys.executable, '-c', "
    "'import pyarrow as pa; print(pa.default_memory_pool().backend_name)'], "
    "capture_output=True, text=True, check=True).stdout.strip())"
)


DECAY_OF_A_CHILD = (
    "import cti_assets, subprocess, sys; print(subprocess.run([sys.executable, '-c', "
    "'import os; print(os.environ[\"JE_ARROW_MALLOC_CONF\"])'], "
    "capture_output=True, text=True, check=True).stdout.strip())"
)


def _pool(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF")}
    environ.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _has_jemalloc() -> bool:
    import pyarrow as pa

    return "jemalloc" in pa.supported_memory_backends()


pytestmark = pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow has no jemalloc")


def test_plain_pyarrow_would_use_mimalloc_so_the_choice_is_ours():
    assert _pool("import pyarrow as pa; print(pa.default_memory_pool().backend_name)") == \
        "mimalloc"


@pytest.mark.parametrize("code", [POOL_AFTER_OUR_IMPORT, POOL_WHEN_PYARROW_CAME_FIRST,
                                  POOL_OF_A_CHILD])
def test_arrow_allocates_from_jemalloc(code):
    assert _pool(code) == "jemalloc"


def test_an_operators_choice_is_kept():
    assert _pool(POOL_WHEN_PYARROW_CAME_FIRST, ARROW_DEFAULT_MEMORY_POOL="system") == "system"
    assert _pool(POOL_AFTER_OUR_IMPORT, ARROW_DEFAULT_MEMORY_POOL="system") == "system"


def test_freed_pages_are_kept_a_while_here_and_in_children():
    assert _pool(DECAY_OF_A_CHILD) == f"dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}"


def test_an_operators_jemalloc_settings_are_kept():
    assert _pool(DECAY_OF_A_CHILD, JE_ARROW_MALLOC_CONF="dirty_decay_ms:0") == "dirty_decay_ms:0"
