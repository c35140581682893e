"""The project's own hold on a provider pool: at most `limit` steps of one pool at a time on
this data directory, whatever Dagster's slot claim says.

Dagster 1.13.27 claims a pool slot with a SELECT of a free slot row then an UPDATE of that row,
outside one transaction: on the embedded SQLite instance two steps starting together both won a
limit-1 pool in most rounds of tests/reliability/test_pool_limits.py, and on PostgreSQL (whose
index connection is AUTOCOMMIT) now and then. So each lookup step also takes one of `limit`
lock files under CTI_DATA_DIR/pools (flock through `filelock`): the kernel makes that strict
between processes and frees it when a holder dies, even by kill -9, so it never leaks. It holds
between every process that shares the data directory (one machine, or containers sharing the
data volume); runs on separate machines with separate data directories are not bounded by it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

POLL_S = 0.2


@contextmanager
def hold_pool(pool: str, limit: int | None, directory: Path,
              poll_s: float = POLL_S) -> Iterator[int | None]:
    """Hold one of the pool's `limit` places for the block (waiting while all are taken); the
    place's number, or None when the pool has no limit."""
    if limit is None or limit < 1:
        yield None
        return
    directory.mkdir(parents=True, exist_ok=True)
    locks = [FileLock(str(directory / f"{pool}.{n}.lock"), thread_local=False)
             for n in range(limit)]  # fmt: skip
    waiting = threading.Event()
    while True:
        for n, lock in enumerate(locks):
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield n
            finally:
                lock.release()
            return
        waiting.wait(poll_s)  # every place is held by another step: theirs end by themselves
