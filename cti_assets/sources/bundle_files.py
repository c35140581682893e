"""STIX 2.1 bundle files in and out of the embedded store.

Import is all-or-nothing: every file is read and every object validated (with stix2) before one
SQLite transaction writes them, so a bad file never leaves a half-imported store. One id twice
in an import is the same object read twice when identical, and an error naming both places when
not (which one should win is the author's call, not ours). A UTF-8 byte-order mark is accepted.
Export writes a bundle OpenCTI's importer accepts, with an id derived from its content so that
exporting the same store twice gives byte-identical files. An export goes to an existing
directory only (a directory given as the target gets a file inside it) and never replaces a file
unless told to. The bundle is written to a temporary file beside the target, then hard-linked to
the target's name (which fails if that name exists, even when it appeared a moment ago) or, told
to replace, renamed over it: the target is whole or untouched, and a failed write leaves no
temporary file behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import stix2

from cti_assets.sources.local import OBSERVABLE_STIX_TYPES, LocalStixStore

# Namespace of bundle ids made by this project (uuid5 over the bundle's objects).
BUNDLE_NAMESPACE = uuid.UUID("4d1f9e1c-3b0a-5c6e-9f43-2a9b6f1d7e85")
_ID_PATTERN = re.compile(
    r"([a-z0-9][a-z0-9-]*[a-z0-9])--"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


class BundleError(ValueError):
    """A bundle file cannot be imported; the message names the file and the problem."""


@dataclass
class ImportReport:
    """What an import did: how many files and objects, new vs already present, per type."""

    files: int = 0
    objects: int = 0
    created: int = 0
    updated: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    # creation times of the observables this import added (those already there keep theirs)
    new_observables: list[datetime] = field(default_factory=list)
    kept_observables: int = 0  # observables already in the store, their creation time kept


def load_bundle_file(path: str | Path) -> list[dict]:
    """The objects of one bundle file, each checked by stix2; BundleError otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM is allowed
    except (OSError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: cannot read the file: {error}") from None
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError as error:
        raise BundleError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except RecursionError:  # e.g. 100,000 nested arrays: no STIX bundle is that deep
        raise BundleError(f"{path}: JSON nested too deeply to be a STIX bundle") from None
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
        kind = bundle.get("type") if isinstance(bundle, dict) else type(bundle).__name__
        raise BundleError(f"{path}: not a STIX bundle (top-level type is {kind!r})")
    objects = bundle.get("objects", [])
    if not isinstance(objects, list):
        raise BundleError(f"{path}: 'objects' must be a list")
    for index, obj in enumerate(objects):
        problem = _object_problem(obj)
        if problem:
            label = obj.get("id") if isinstance(obj, dict) else None
            where = f"object {index}" + (f" ({label})" if isinstance(label, str) else "")
            raise BundleError(f"{path}: {where}: {problem}")
    return objects


def _object_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return f"not a JSON object ({type(obj).__name__})"
    stix_type, stix_id = obj.get("type"), obj.get("id")
    if not isinstance(stix_type, str) or not stix_type:
        return "missing 'type'"
    if not isinstance(stix_id, str):
        return "missing 'id'"
    match = _ID_PATTERN.fullmatch(stix_id)
    if match is None:
        return f"id {stix_id[:80]!r} is not of the form <type>--<uuid>"
    if match.group(1) != stix_type:
        return f"id {stix_id!r} does not match type {stix_type!r}"
    try:
        stix2.parse(obj, allow_custom=True, version="2.1")
    except Exception as error:  # stix2 raises many exception types for bad content
        return f"invalid STIX: {' '.join(str(error).split())[:300]}"
    return None


def import_bundles(
    store: LocalStixStore, paths: Iterable[str | Path], created_at: datetime | None = None
) -> ImportReport:
    """Validate every file, then write all their objects in one transaction. `created_at`
    stamps objects new to the store (default: now); objects already there keep theirs."""
    report = ImportReport()
    objects: list[dict] = []
    seen: dict[str, tuple[str, dict]] = {}  # id -> (where it was first read, the object)
    for path in paths:
        for index, obj in enumerate(load_bundle_file(path)):
            where = f"{path}: object {index}"
            first = seen.get(obj["id"])
            if first is None:
                seen[obj["id"]] = (where, obj)
                objects.append(obj)
            elif _canonical(first[1]) != _canonical(obj):
                raise BundleError(
                    f"{obj['id']} appears twice with different content: {first[0]} and {where}"
                    " (keep one of them)"
                )
        report.files += 1
    observable_ids = [obj["id"] for obj in objects if obj["type"] in OBSERVABLE_STIX_TYPES]
    already_there = set(store.first_seen(observable_ids))
    stats = store.write_objects(objects, first_seen_at=created_at)
    if stats.failed:  # load_bundle_file already refused these shapes; kept as a guard
        raise BundleError("; ".join(stats.failures))
    report.objects = len(objects)
    report.created, report.updated = stats.created, stats.updated
    report.by_type = dict(sorted(Counter(obj["type"] for obj in objects).items()))
    added = [stix_id for stix_id in observable_ids if stix_id not in already_there]
    report.new_observables = sorted(store.first_seen(added).values())
    report.kept_observables = len(already_there)
    return report


def _canonical(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bundle_of(objects: list[dict]) -> dict:
    """A STIX 2.1 bundle of `objects` whose id is a uuid5 over their canonical JSON."""
    content = json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid5(BUNDLE_NAMESPACE, content)}",
        "objects": objects,
    }


def export_target(out: str | Path | None, default: Path, *, overwrite: bool = False) -> Path:
    """The file an export writes: `default` when `out` is None (its folder is the caller's to
    create), else `out` itself, or a file named like `default` inside `out` when it is a
    directory. BundleError when its directory does not exist (none is created), or when the file
    exists and `overwrite` is not set, or exists and is not a regular file."""
    if out is None:
        path = default
    else:
        path = Path(out).expanduser()
        try:
            if path.is_dir():
                path = path / default.name
            elif not str(out).strip() or path.name in ("", ".", ".."):
                raise BundleError(f"--out {str(out)!r} is not a file name")
            elif not path.parent.exists():
                raise BundleError(f"cannot write {path}: directory {path.parent} does not exist")
            elif not path.parent.is_dir():
                raise BundleError(f"cannot write {path}: {path.parent} is not a directory")
        except OSError as error:  # e.g. a name longer than the file system allows
            raise BundleError(f"cannot write {path}: {error.strerror or error}") from None
    _refuse_to_replace(path, overwrite)
    return path


def _refuse_to_replace(path: Path, overwrite: bool) -> None:
    try:
        taken, regular = path.is_symlink() or path.exists(), path.is_file()
    except OSError as error:
        raise BundleError(f"cannot write {path}: {error.strerror or error}") from None
    if taken and not overwrite:
        raise _already_exists(path)
    if taken and not regular:
        raise BundleError(f"{path} exists and is not a regular file: not replaced")


def _already_exists(path: Path) -> BundleError:
    return BundleError(f"{path} already exists; --force replaces it")


def write_bundle_file(bundle: dict, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a bundle as JSON to a file that must not exist yet, or, with `overwrite`, replace
    `path` atomically. BundleError when it exists (without `overwrite`) or cannot be written; the
    temporary file is removed whatever happens."""
    path = Path(path)
    _refuse_to_replace(path, overwrite)
    text = json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # beside the target (a rename or link never crosses file systems), its name within NAME_MAX
    temporary = path.with_name(f".{path.name[:200]}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path, text)
    except OSError as error:
        raise BundleError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


# link() refused by the file system itself (FAT, some network and FUSE mounts), not by the name
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _link_new(temporary: Path, path: Path, text: str) -> None:
    """Give the complete `temporary` file the name `path`, which must not exist."""
    try:
        os.link(temporary, path)
        return
    except FileExistsError:
        raise _already_exists(path) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
    try:  # without hard links: create `path` exclusively, and remove it if the write fails
        stream = open(path, "x", encoding="utf-8")
    except FileExistsError:
        raise _already_exists(path) from None
    try:
        with stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def export_store(
    store: LocalStixStore,
    path: str | Path,
    types: Iterable[str] | None = None,
    *,
    overwrite: bool = False,
) -> int:
    """Write the store's objects (or those of the given STIX types) as one bundle file;
    returns how many objects it holds. An existing file is replaced (atomically) only with
    `overwrite`."""
    objects = store.all_objects(types)
    write_bundle_file(bundle_of(objects), path, overwrite=overwrite)
    return len(objects)
