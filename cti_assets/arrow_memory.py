"""Which allocator Arrow uses in every cti-assets process: jemalloc, chosen once at import.

pyarrow (25 and 26) allocates from a bundled mimalloc 3 by default. That mimalloc sets up a heap
per thread on a thread's first allocation, and has crashed processes that create many
short-lived threads (apache/arrow#50471, #50908). Ours do: Parquet slices are read and written
on side threads, scoring builds its texts on a second thread, Dagster and the doubles run
threads of their own. Our CI once died of a segmentation fault inside garbage collection during
an Arrow cast in a process like that. jemalloc, Arrow's default allocator for years before
mimalloc, is also the faster one for our slice-after-slice outputs: mimalloc hands freed pages
back to the OS within milliseconds, so each slice faulted them in again (1.5 to 2 s more system
time per million re-scored rows).

The choice is made here and nowhere else. ARROW_DEFAULT_MEMORY_POOL, which Arrow itself reads
when it first needs a pool, also reaches the processes this one starts (step processes, code
servers, the webserver). `use_jemalloc` sets the pool outright for a process that had loaded
pyarrow before cti_assets. An operator who sets ARROW_DEFAULT_MEMORY_POOL keeps that choice.

Arrow's jemalloc hands freed dirty pages back to the OS after a second (its decay time), so a
re-score, which frees and reallocates a slice's worth of buffers every few seconds, faulted the
same pages in again slice after slice. DECAY_MS keeps them 3 seconds instead: measured on the
1M re-score (100,000-row slices), 1000 ms (Arrow's default) 1.8M minor faults, 7.5-8.2 s of
system time, peak 1.24-1.30 GB; 3000 ms 1.24-1.48M, peak 1.37-1.39 GB; 5000 ms 1.08-1.25M,
4.1-5.4 s, peak 1.40-1.54 GB; 10000 ms 1.18M, peak 1.47 GB (target <= 2 GB; the 10M re-score's
peak, 1.64 GB at 1000 ms, was not measured again). It is set through JE_ARROW_MALLOC_CONF,
which Arrow's jemalloc reads when it first allocates, so it covers every arena
(`pa.jemalloc_set_decay_ms` changes only arenas made after the call, not the main thread's:
1.48M faults at 5000 ms) and reaches the processes this one starts; an operator who sets
JE_ARROW_MALLOC_CONF keeps theirs. 3000 rather than 5000: nearly the same faults, and a
smaller peak leaves the 10M re-score more room under 2 GB.
"""

from __future__ import annotations

import os
import sys

ENV = "ARROW_DEFAULT_MEMORY_POOL"
PREFERRED = "jemalloc"
FALLBACK = "system"  # glibc malloc, where a pyarrow build has no jemalloc
JEMALLOC_ENV = "JE_ARROW_MALLOC_CONF"
DECAY_MS = 3000


def use_jemalloc() -> None:
    """Ask for jemalloc, keeping freed pages DECAY_MS, in this process and those it starts."""
    chosen = os.environ.setdefault(ENV, PREFERRED)
    os.environ.setdefault(JEMALLOC_ENV, f"dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}")
    if "pyarrow" in sys.modules:  # already loaded: Arrow may have read the variable already
        set_pool(chosen)


def set_pool(backend: str) -> str:
    """Make `backend` Arrow's default pool now (jemalloc falls back to the system allocator
    where pyarrow lacks it); returns the backend in use."""
    import pyarrow as pa

    makers = {"jemalloc": pa.jemalloc_memory_pool, "system": pa.system_memory_pool,
              "mimalloc": pa.mimalloc_memory_pool}
    make = makers.get(backend, pa.jemalloc_memory_pool)
    try:
        pool = make()
    except NotImplementedError:
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    return pool.backend_name
