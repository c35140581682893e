"""Sends a write-back bundle to a source, retrying until every object is written.

Every id in the bundle is deterministic, so sending the whole bundle again after a failure
halfway through is safe: objects already written are updated in place and only the missing
ones get created. `dry_run` writes the bundle to disk instead, for review.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from cti_assets import settings
from cti_assets.sources.base import Source, SourceError, WriteStats

log = logging.getLogger(__name__)


def write_with_retries(
    source: Source,
    bundle: dict,
    max_attempts: int = 3,
    backoff_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> WriteStats:
    """Write the bundle; resend it (with backoff) while objects fail or the source errors.

    Returns the stats of the last attempt, with `created` summed over all attempts (an
    object created by an earlier, partly failed attempt counts as updated on the next one).
    Raises SourceError when the last attempt itself raised.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    created = 0
    for attempt in range(1, max_attempts + 1):
        try:
            stats = source.write_bundle(bundle)
        except SourceError as error:
            if attempt == max_attempts:
                raise
            log.warning("write attempt %d/%d failed: %s", attempt, max_attempts, error)
        else:
            created += stats.created
            if not stats.failed or attempt == max_attempts:
                return WriteStats(
                    created=created,
                    updated=max(0, stats.updated - (created - stats.created)),
                    failed=stats.failed,
                    failures=list(stats.failures),
                )
            log.warning(
                "write attempt %d/%d: %d objects failed, resending the bundle",
                attempt, max_attempts, stats.failed,
            )
        sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def dry_run(bundle: dict, path: str | Path) -> Path:
    """Write the bundle as JSON (sorted keys, stable bytes); a relative path lands in the
    data directory's bundles folder. Returns the path written."""
    target = Path(path)
    if not target.is_absolute():
        target = settings.bundles_dir() / target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(target.suffix + ".tmp")
    temporary.write_text(json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    temporary.replace(target)
    return target
