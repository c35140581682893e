"""Where a write-back bundle goes: to the source, or to disk for review (`dry_run`).

Retries have one owner: the OpenCTI source retries each platform call on transient failures
(sources/opencti.py, OPENCTI_MAX_ATTEMPTS, exponential backoff with a cap). Nothing here resends;
a bundle with objects still failing fails the step, and the asset's RetryPolicy reruns the whole
step, which is safe because every id in the bundle is deterministic (objects already written are
updated in place, only the missing ones are created).
"""

from __future__ import annotations

import json
from pathlib import Path

from cti_assets import settings
from cti_assets.sources.base import Source, WriteStats


def send(source: Source, bundle: dict) -> WriteStats:
    """Write the bundle once; the source retries its own calls. Raises SourceError when the
    source cannot be used at all."""
    return source.write_bundle(bundle)


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
