"""The embedded STIX 2.1 store: one SQLite file that stands in for OpenCTI.

It lets the whole pipeline run (and be tested) with no platform: bundles are imported into it,
observables are read from it by creation window, and enrichment is written back into it. Any
STIX object is kept as JSON keyed by its id. An observable's creation time is when it first
entered the store (`first_seen_at`), the same meaning as OpenCTI's `created_at`; re-importing never
changes it. Several processes share the file, hence WAL mode and a busy timeout.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cti_assets import settings
from cti_assets.intake.observable import (
    OUT_OF_SCOPE_STIX_TYPES,
    STIX_TO_ENTITY_TYPE,
    MarkingRef,
    marking_ref,
)
from cti_assets.intake.observables import identity_keys
from cti_assets.sources.base import (
    REMOVE_LABELS,
    THREAT_ENTITY_TYPES,
    ObservableRecord,
    SourceError,
    ThreatEntity,
    ThreatLink,
    WriteStats,
)
from cti_assets.state.sqlite_wal import connect_wal

# Every SCO is read as an observable; out-of-scope types end up `skipped` in the table.
_ENTITY_TYPE_OF: dict[str, str] = {**STIX_TO_ENTITY_TYPE, **OUT_OF_SCOPE_STIX_TYPES}
OBSERVABLE_STIX_TYPES: tuple[str, ...] = tuple(_ENTITY_TYPE_OF)
HASH_PREFERENCE: tuple[str, ...] = ("SHA-256", "SHA-1", "MD5")
# Where OpenCTI's own exports put score, labels and other platform properties of an object.
OPENCTI_EXTENSIONS = (
    "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba",
    "extension-definition--f93e2c80-4231-4f9a-af8b-95c9bd566a82",
)
# When an object without `modified` is written again, list properties are merged as a union
# (order kept) and mappings such as `hashes` key by key; other properties are replaced.
_LIST_PROPERTIES = ("labels", "x_opencti_labels", "object_marking_refs", "external_references",
                    "x_opencti_external_references")
_SQL_CHUNK = 500
_OBSERVABLE_TYPES_SQL = ", ".join(f"'{t}'" for t in OBSERVABLE_STIX_TYPES)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    json TEXT NOT NULL,
    modified TEXT,
    first_seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_type_seen ON objects (type, first_seen_at, id);
CREATE INDEX IF NOT EXISTS objects_observable_seen ON objects (first_seen_at, id)
    WHERE type IN ({_OBSERVABLE_TYPES_SQL});
CREATE TABLE IF NOT EXISTS relationships (
    id TEXT PRIMARY KEY,
    relationship_type TEXT NOT NULL,
    source_ref TEXT NOT NULL,
    target_ref TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS relationships_source ON relationships (source_ref);
CREATE INDEX IF NOT EXISTS relationships_target ON relationships (target_ref);
"""
# Each observable under its identity keys, with its marking ids: a value's copies are found
# without reading every copy (a feed re-importing values daily under new ids has many).
_VALUE_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS value_keys (
    entity_type TEXT NOT NULL,
    value_key TEXT NOT NULL,
    id TEXT NOT NULL,
    markings TEXT NOT NULL,
    PRIMARY KEY (entity_type, value_key, id)
);
CREATE INDEX IF NOT EXISTS value_keys_id ON value_keys (id);
"""
# PRAGMA user_version of a store whose value_keys hold every observable under the identity keys
# of this version (older stores are indexed again once when opened): raise it whenever
# identity_keys or normalisation changes what a value's key is
_VALUE_KEYS_BUILT = 2


def utc_text(moment: datetime) -> str:
    """Fixed-width UTC text, so string order is time order in SQL."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment.isoformat()} must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    """The inverse of utc_text."""
    return datetime.fromisoformat(text)


def _stix_time(value: object) -> str | None:
    """A STIX timestamp as fixed-width UTC text; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return utc_text(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _dump(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _platform_property(obj: dict, key: str) -> object:
    for extension_id in OPENCTI_EXTENSIONS:
        extension = (obj.get("extensions") or {}).get(extension_id)
        if isinstance(extension, dict) and key in extension:
            return extension[key]
    return None


def _merge(stored: dict, incoming: dict) -> dict:
    """Labels and other lists add up as on the platform, except the labels the write-back
    names under REMOVE_LABELS (a stale verdict), which go, as pycti's remove_label does."""
    incoming = dict(incoming)
    removed = set(incoming.pop(REMOVE_LABELS, None) or [])
    merged = {**stored, **incoming}
    for key in _LIST_PROPERTIES:
        old, new = stored.get(key), incoming.get(key)
        if isinstance(old, list) and isinstance(new, list):
            merged[key] = old + [item for item in new if item not in old]
    for key in ("labels", "x_opencti_labels"):
        if isinstance(merged.get(key), list) and removed:
            merged[key] = [label for label in merged[key] if label not in removed]
    for key, new in incoming.items():
        old = stored.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            merged[key] = {**old, **new}
    return merged


class LocalStixStore:
    """Source backed by one SQLite file holding STIX 2.1 objects."""

    name = "local"

    def __init__(
        self, path: str | Path | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.path = Path(path) if path is not None else settings.store_path()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._schema_ready = False

    # --- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            opener = sqlite3.connect if self._schema_ready else connect_wal
            connection = opener(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise SourceError(f"cannot open local STIX store {self.path}: {error}") from error
        try:
            connection.execute("PRAGMA busy_timeout = 30000")
            if not self._schema_ready:
                connection.executescript(_SCHEMA)
                if connection.execute("PRAGMA user_version").fetchone()[0] < _VALUE_KEYS_BUILT:
                    _index_all_values(connection)
                self._schema_ready = True
            connection.execute("PRAGMA synchronous = NORMAL")
            yield connection
        except sqlite3.Error as error:
            raise SourceError(f"local STIX store {self.path}: {error}") from error
        finally:
            connection.close()

    def check(self) -> None:
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")

    # --- writing ----------------------------------------------------------------------------

    def write_bundle(self, bundle: dict) -> WriteStats:
        if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
            raise SourceError("write_bundle expects a STIX bundle (type 'bundle')")
        objects = bundle.get("objects")
        if not isinstance(objects, list):
            raise SourceError("write_bundle: the bundle has no 'objects' list")
        return self.write_objects(objects)

    def write_objects(
        self, objects: Iterable[object], first_seen_at: datetime | None = None
    ) -> WriteStats:
        """Upsert objects in one transaction; new ones are stamped `first_seen_at` (default
        now). A newer `modified` replaces; objects without `modified` are merged."""
        stats = WriteStats()
        seen_at = utc_text(first_seen_at or self._clock())
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for index, obj in enumerate(objects):
                    problem = _shape_problem(obj)
                    if problem or not isinstance(obj, dict):  # not a dict: a problem
                        stats.failed += 1
                        stats.failures.append(f"object {index}: {problem}")
                        continue
                    if self._upsert(connection, obj, seen_at):
                        stats.created += 1
                    else:
                        stats.updated += 1
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return stats

    def _upsert(self, connection: sqlite3.Connection, obj: dict, seen_at: str) -> bool:
        """Write one object; True when it was new."""
        row = connection.execute(
            "SELECT json, modified FROM objects WHERE id = ?", (obj["id"],)
        ).fetchone()
        modified = _stix_time(obj.get("modified"))
        if row is None:
            final = {k: v for k, v in obj.items() if k != REMOVE_LABELS}
        elif modified and row[1]:
            if modified <= row[1]:
                return False
            final = {k: v for k, v in obj.items() if k != REMOVE_LABELS}
        else:
            final = _merge(json.loads(row[0]), obj)
        connection.execute(
            "INSERT INTO objects (id, type, json, modified, first_seen_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET type = excluded.type, json = excluded.json,"
            " modified = excluded.modified",
            (final["id"], final["type"], _dump(final), _stix_time(final.get("modified")),
             seen_at),
        )
        if final["type"] in _ENTITY_TYPE_OF:
            _index_values(connection, final)
        if final["type"] == "relationship":
            connection.execute(
                "INSERT OR REPLACE INTO relationships VALUES (?, ?, ?, ?)",
                (final["id"], str(final.get("relationship_type", "")),
                 str(final.get("source_ref", "")), str(final.get("target_ref", ""))),
            )
        return row is None

    # --- reading ----------------------------------------------------------------------------

    def get(self, stix_id: str) -> dict | None:
        with self._connect() as connection:
            row = connection.execute("SELECT json FROM objects WHERE id = ?", (stix_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def first_seen(self, stix_ids: Iterable[str]) -> dict[str, datetime]:
        """When each of the given objects entered the store (ids not in it are left out)."""
        seen: dict[str, datetime] = {}
        with self._connect() as connection:
            for chunk in _chunks(sorted(set(stix_ids))):
                rows = connection.execute(
                    "SELECT id, first_seen_at FROM objects"
                    f" WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
                seen.update((stix_id, parse_utc(text)) for stix_id, text in rows)
        return seen

    def all_objects(self, types: Iterable[str] | None = None) -> list[dict]:
        """Every object (or those of the given STIX types), ordered by type then id."""
        query, params = "SELECT json FROM objects", []
        if types is not None:
            params = list(types)
            query += f" WHERE type IN ({', '.join('?' * len(params))})"
        with self._connect() as connection:
            rows = connection.execute(query + " ORDER BY type, id", params).fetchall()
        return [json.loads(row[0]) for row in rows]

    def counts_by_type(self) -> dict[str, int]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT type, COUNT(*) FROM objects GROUP BY type ORDER BY type"
            ).fetchall()
        return dict(rows)

    def observables_created_between(self, start: datetime, end: datetime) -> list[ObservableRecord]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT json, first_seen_at FROM objects"
                f" WHERE type IN ({_OBSERVABLE_TYPES_SQL})"
                " AND first_seen_at >= ? AND first_seen_at < ? ORDER BY first_seen_at, id",
                (utc_text(start), utc_text(end)),
            ).fetchall()
            markings = self._marking_refs(connection)
        return [_record(json.loads(text), parse_utc(seen), markings) for text, seen in rows]

    def copies_of(
        self, keys: Iterable[tuple[str, str]], known: Collection[str] = ()
    ) -> dict[tuple[str, str], list[ObservableRecord]]:
        wanted = sorted(set(keys))
        known_ids = set(known)
        others: list[tuple[str, str, str]] = []  # (entity type, value key, id) not known
        found: dict[tuple[str, str], list[ObservableRecord]] = {}
        with self._connect() as connection:
            for entity_type in sorted({entity_type for entity_type, _ in wanted}):
                values = [value for kind, value in wanted if kind == entity_type]
                for chunk in _chunks(values):
                    # one copy per value and set of markings: copies marked alike decide alike,
                    # and a set one of the caller's rows has is decided there already
                    rows = connection.execute(
                        "SELECT value_key, MIN(id) FROM value_keys WHERE entity_type = ?"
                        f" AND value_key IN ({', '.join('?' * len(chunk))})"
                        " GROUP BY value_key, markings", [entity_type, *chunk])
                    others += [(entity_type, value_key, stix_id) for value_key, stix_id in rows
                               if stix_id not in known_ids]
            if not others:  # the usual day: every value held once, by the caller's rows
                return found
            markings = self._marking_refs(connection)
            for entity_type, value_key, stix_id in others:
                row = connection.execute("SELECT json, first_seen_at FROM objects WHERE id = ?",
                                         (stix_id,)).fetchone()
                if row is not None:
                    record = _record(json.loads(row[0]), parse_utc(row[1]), markings)
                    found.setdefault((entity_type, value_key), []).append(record)
        return found

    def current_scores(self, stix_ids: Iterable[str]) -> dict[str, int]:
        scores: dict[str, int] = {}
        with self._connect() as connection:
            for chunk in _chunks(sorted(set(stix_ids))):
                rows = connection.execute(
                    f"SELECT id, json FROM objects WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk)
                for stix_id, text in rows:
                    score = _score(json.loads(text))
                    if score is not None:
                        scores[stix_id] = score
        return scores

    def created_since(
        self, after: datetime | None, after_id: str | None, limit: int
    ) -> list[tuple[datetime, str]]:
        query = f"SELECT first_seen_at, id FROM objects WHERE type IN ({_OBSERVABLE_TYPES_SQL})"
        params: list[object] = []
        if after is not None and after_id is not None:
            query += " AND (first_seen_at, id) > (?, ?)"
            params += [utc_text(after), after_id]
        elif after is not None:
            query += " AND first_seen_at > ?"
            params.append(utc_text(after))
        with self._connect() as connection:
            rows = connection.execute(
                query + " ORDER BY first_seen_at, id LIMIT ?", [*params, int(limit)]
            ).fetchall()
        return [(parse_utc(seen), stix_id) for seen, stix_id in rows]

    def _marking_refs(self, connection: sqlite3.Connection) -> dict[str, MarkingRef]:
        rows = connection.execute("SELECT json FROM objects WHERE type = 'marking-definition'")
        refs = (marking_ref(json.loads(text)) for (text,) in rows)
        return {ref.id: ref for ref in refs}

    def threat_entities(self) -> list[ThreatEntity]:
        return list(self._entities(None).values())

    def _entities(self, ids: Iterable[str] | None) -> dict[str, ThreatEntity]:
        types = ", ".join(f"'{t}'" for t in THREAT_ENTITY_TYPES)
        with self._connect() as connection:
            if ids is None:
                rows = connection.execute(
                    f"SELECT json FROM objects WHERE type IN ({types}) ORDER BY type, id"
                ).fetchall()
            else:
                rows = []
                for chunk in _chunks(sorted(set(ids))):
                    rows += connection.execute(
                        f"SELECT json FROM objects WHERE type IN ({types})"
                        f" AND id IN ({', '.join('?' * len(chunk))})", chunk
                    ).fetchall()
        entities = (_entity(json.loads(text)) for (text,) in rows)
        return {entity.stix_id: entity for entity in entities}

    def threat_context(
        self, observable_stix_ids: list[str], internal_ids: Mapping[str, str] | None = None
    ) -> list[ThreatLink]:
        """`internal_ids` is unused: here the internal id is the stix id."""
        observables = set(observable_stix_ids)
        with self._connect() as connection:
            direct = _relationships_touching(connection, observables)
            indicator_of: dict[str, set[str]] = {}
            for _, rel_type, source, target in direct:
                if rel_type == "based-on" and source.startswith("indicator--"):
                    indicator_of.setdefault(source, set()).add(target)
            via_indicator = _relationships_touching(connection, set(indicator_of))
        candidates: list[tuple[str, str, str, str, str | None]] = []  # obs, entity, via, type, ind
        for _, rel_type, source, target in direct:
            for obs, other in ((source, target), (target, source)):
                if obs in observables and _is_threat_entity(other):
                    candidates.append((obs, other, "direct", rel_type, None))
        for _, rel_type, source, target in via_indicator:
            for indicator, other in ((source, target), (target, source)):
                if indicator in indicator_of and _is_threat_entity(other):
                    for obs in indicator_of[indicator] & observables:
                        candidates.append((obs, other, "indicator", rel_type, indicator))
        entities = self._entities({entity_id for _, entity_id, *_ in candidates})
        return [
            ThreatLink(obs, entities[entity_id], via, rel_type, indicator)
            for obs, entity_id, via, rel_type, indicator in sorted(
                set(candidates), key=lambda c: (c[0], c[1], c[2], c[3], c[4] or "")
            )
            if entity_id in entities
        ]


def _value_keys(obj: dict) -> set[tuple[str, str]]:
    """The identity keys of an observable (intake.observables.identity_keys): each of a file's
    hashes, a Hostname as a Domain-Name; none for a value the pipeline would reject."""
    entity_type = _ENTITY_TYPE_OF[obj["type"]]
    values = list(_hashes(obj).values()) if obj["type"] == "file" else [obj.get("value")]
    return identity_keys(entity_type, values)


def _index_values(connection: sqlite3.Connection, obj: dict) -> None:
    connection.execute("DELETE FROM value_keys WHERE id = ?", (obj["id"],))
    markings = json.dumps(sorted({str(m) for m in obj.get("object_marking_refs") or []}))
    connection.executemany(
        "INSERT OR IGNORE INTO value_keys (entity_type, value_key, id, markings)"
        " VALUES (?, ?, ?, ?)",
        [(entity_type, value, obj["id"], markings)
         for entity_type, value in sorted(_value_keys(obj))])


def _index_all_values(connection: sqlite3.Connection) -> None:
    """Index every observable again under this version's identity keys, once, in one
    transaction (a copy missing from a half-built index would hide a stricter TLP), reading
    the objects a batch at a time."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if connection.execute("PRAGMA user_version").fetchone()[0] < _VALUE_KEYS_BUILT:
            connection.execute("DROP TABLE IF EXISTS value_keys")
            for statement in _VALUE_KEYS_SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            cursor = connection.execute(
                f"SELECT json FROM objects WHERE type IN ({_OBSERVABLE_TYPES_SQL})")
            while batch := cursor.fetchmany(10_000):
                for (text,) in batch:
                    _index_values(connection, json.loads(text))
            connection.execute(f"PRAGMA user_version = {_VALUE_KEYS_BUILT}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _shape_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return f"not a JSON object ({type(obj).__name__})"
    stix_type, stix_id = obj.get("type"), obj.get("id")
    if not isinstance(stix_type, str) or not isinstance(stix_id, str):
        return "missing 'type' or 'id'"
    if not stix_id.startswith(f"{stix_type}--"):
        return f"id {stix_id!r} does not match type {stix_type!r}"
    return None


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _SQL_CHUNK):
        yield items[start: start + _SQL_CHUNK]


def _relationships_touching(
    connection: sqlite3.Connection, ids: set[str]
) -> list[tuple[str, str, str, str]]:
    found: dict[str, tuple[str, str, str, str]] = {}
    for chunk in _chunks(sorted(ids)):
        marks = ", ".join("?" * len(chunk))
        rows = connection.execute(
            f"SELECT id, relationship_type, source_ref, target_ref FROM relationships"
            f" WHERE source_ref IN ({marks}) UNION"
            f" SELECT id, relationship_type, source_ref, target_ref FROM relationships"
            f" WHERE target_ref IN ({marks})", chunk + chunk
        )
        found.update((row[0], row) for row in rows)
    return list(found.values())


def _is_threat_entity(stix_id: str) -> bool:
    return stix_id.split("--", 1)[0] in THREAT_ENTITY_TYPES


def _entity(obj: dict) -> ThreatEntity:
    aliases: list[str] = []
    for key in ("aliases", "x_opencti_aliases"):
        for alias in obj.get(key) or []:
            if isinstance(alias, str) and alias not in aliases:
                aliases.append(alias)
    return ThreatEntity(obj["id"], obj["type"], str(obj.get("name") or obj["id"]), tuple(aliases))


def _hashes(obj: dict) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for key, value in (obj.get("hashes") or {}).items():
        name = str(key).upper().replace("_", "-")
        name = {"SHA256": "SHA-256", "SHA1": "SHA-1", "SHA512": "SHA-512"}.get(name, name)
        if isinstance(value, str):
            hashes[name] = value
    return hashes


def _score(obj: dict) -> int | None:
    score = obj.get("x_opencti_score")
    if score is None:
        score = _platform_property(obj, "score")
    if isinstance(score, bool):
        return None
    if isinstance(score, int):
        return score
    if isinstance(score, str) and score.strip().isdigit():
        return int(score)
    return None


def _labels(obj: dict) -> tuple[str, ...]:
    for labels in (obj.get("x_opencti_labels"), obj.get("labels"),
                   _platform_property(obj, "labels")):
        if isinstance(labels, list) and labels:
            return tuple(str(label) for label in labels)
    return ()


def _record(obj: dict, created_at: datetime, markings: dict[str, MarkingRef]) -> ObservableRecord:
    hashes = _hashes(obj) if obj["type"] == "file" else {}
    if obj["type"] == "file":
        strongest = next((hashes[h] for h in HASH_PREFERENCE if h in hashes), None)
        value = strongest or next(iter(hashes.values()), None) or obj.get("name")
    else:
        value = next((obj[key] for key in ("value", "name", "number", "key") if obj.get(key)
                      is not None), None)
    marking_ids = tuple(str(ref) for ref in obj.get("object_marking_refs") or [])
    return ObservableRecord(
        internal_id=obj["id"],
        stix_id=obj["id"],
        entity_type=_ENTITY_TYPE_OF[obj["type"]],
        value="" if value is None else str(value),
        created_at=created_at,
        markings=tuple(markings.get(m) or MarkingRef(m) for m in marking_ids),
        labels=_labels(obj),
        score=_score(obj),
        hashes=hashes,
    )
