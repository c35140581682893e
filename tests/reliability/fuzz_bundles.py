"""Fuzzed STIX import files, reproducible from a seed: a valid bundle of mixed observables,
markings, indicators and relationships, then one to three mutations (truncation, wrong types,
missing or bad fields, conflicting and identical duplicate ids, bytes that are not UTF-8 or not
JSON, a BOM, deep nesting, odd top levels). Object ids come from a small fixed pool, so valid
files mostly update what earlier ones wrote and the store stays small."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable

NAMESPACE = uuid.UUID("5d1a0b64-6f3e-4a44-9f1c-3c0b9a1e2f10")
WEIRD_VALUES: list[object] = [None, 0, -1, 2**70, 1.5, True, [], {}, [1, "a"], {"a": {"b": 1}},
                              "", "x" * 5000, "\u0000", "\ud7ff\u202e", "../../etc/passwd",
                              "45.83.1.1\r\nX-Injected: 1"]  # fmt: skip


def _id(kind: str, n: int) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, f'{kind}{n}')}"


def base_objects(rng: random.Random) -> list[dict]:
    """A valid mix of 5-25 objects."""
    objects: list[dict] = []
    for _ in range(rng.randint(5, 25)):
        n = rng.randrange(60)
        kind = rng.choice(["ipv4-addr", "domain-name", "url", "file", "indicator", "relationship",
                           "marking"])  # fmt: skip
        if kind == "ipv4-addr":
            objects.append({"type": kind, "spec_version": "2.1", "id": _id(kind, n),
                            "value": f"45.86.{n // 250}.{n % 250 + 1}"})
        elif kind == "domain-name":
            objects.append({"type": kind, "spec_version": "2.1", "id": _id(kind, n),
                            "value": f"fuzz-{n}.example.com"})
        elif kind == "url":
            objects.append({"type": kind, "spec_version": "2.1", "id": _id(kind, n),
                            "value": f"http://fuzz-{n}.example.com/a?b={n}"})
        elif kind == "file":
            objects.append({"type": kind, "spec_version": "2.1", "id": _id(kind, n),
                            "hashes": {"SHA-256": f"{n:064x}"}})
        elif kind == "indicator":
            objects.append({"type": kind, "spec_version": "2.1", "id": _id(kind, n),
                            "created": "2026-11-20T09:00:00.000Z",
                            "modified": "2026-11-20T09:00:00.000Z", "pattern_type": "stix",
                            "pattern": f"[ipv4-addr:value = '45.86.0.{n % 250 + 1}']",
                            "valid_from": "2026-11-20T09:00:00Z", "name": f"fuzz {n}"})
        elif kind == "relationship":
            objects.append({"type": kind, "spec_version": "2.1", "id": _id(kind, n),
                            "created": "2026-11-20T09:00:00.000Z",
                            "modified": "2026-11-20T09:00:00.000Z",
                            "relationship_type": "related-to",
                            "source_ref": _id("indicator", n),
                            "target_ref": _id("ipv4-addr", n)})
        else:
            objects.append({"type": "marking-definition", "spec_version": "2.1",
                            "id": _id("marking-definition", n % 5),
                            "created": "2026-01-01T00:00:00.000Z", "definition_type": "statement",
                            "definition": {"statement": f"fuzz {n % 5}"}})
    unique: dict[str, dict] = {}
    for obj in objects:
        unique.setdefault(obj["id"], obj)
    return list(unique.values())


def _pick(rng: random.Random, bundle: dict) -> dict:
    """One object of the bundle that is still a JSON object (a scratch one when none is)."""
    objects = [o for o in bundle["objects"] if isinstance(o, dict) and o]
    return rng.choice(objects) if objects else {"type": "x"}


def _wrong_type(rng: random.Random, bundle: dict) -> object:
    obj = _pick(rng, bundle)
    obj[rng.choice(sorted(obj))] = rng.choice(WEIRD_VALUES)
    return bundle


def _drop_field(rng: random.Random, bundle: dict) -> object:
    obj = _pick(rng, bundle)
    obj.pop(rng.choice(sorted(obj)))
    return bundle


def _conflicting_duplicate(rng: random.Random, bundle: dict) -> object:
    obj = dict(_pick(rng, bundle))
    obj["x_fuzz"] = rng.random()
    bundle["objects"].append(obj)
    return bundle


def _identical_duplicate(rng: random.Random, bundle: dict) -> object:
    bundle["objects"].append(dict(_pick(rng, bundle)))
    return bundle


def _bad_id(rng: random.Random, bundle: dict) -> object:
    obj = _pick(rng, bundle)
    old = str(obj.get("id"))
    obj["id"] = rng.choice([f"{obj.get('type')}--not-a-uuid",
                            f"indicator--{uuid.UUID(int=rng.getrandbits(128))}", old.upper(),
                            old + "/..", ""])  # fmt: skip
    return bundle


def _odd_top(rng: random.Random, bundle: dict) -> object:
    return rng.choice([bundle["objects"], {"type": "bundle", "objects": {"a": 1}},
                       {"type": "report", "objects": []}, "bundle", 42, None,
                       {"type": "bundle", "objects": [1, "two", None]}])  # fmt: skip


def _empty(rng: random.Random, bundle: dict) -> object:
    bundle["objects"] = []
    return bundle


STRUCTURAL: list[Callable[[random.Random, dict], object]] = [
    _wrong_type, _drop_field, _conflicting_duplicate, _identical_duplicate, _bad_id, _odd_top,
    _empty]


def _encode(rng: random.Random, document: object) -> bytes:
    data = json.dumps(document).encode()
    byte_fault = rng.random()
    if byte_fault < 0.25:  # truncated
        return data[: rng.randrange(max(1, len(data)))]
    if byte_fault < 0.32:  # not UTF-8
        at = rng.randrange(max(1, len(data)))
        return data[:at] + b"\xff\xfe\xc3" + data[at:]
    if byte_fault < 0.38:  # garbage in the JSON
        at = rng.randrange(max(1, len(data)))
        return data[:at] + rng.choice([b"}", b"]]", b",,", b"NaN", b"\x00", b"'"]) + data[at:]
    if byte_fault < 0.42:  # a BOM (accepted)
        return b"\xef\xbb\xbf" + data
    if byte_fault < 0.45:  # deep nesting
        depth = rng.choice([1000, 100_000])
        return b'{"type": "bundle", "objects": ' + b"[" * depth + b"]" * depth + b"}"
    if byte_fault < 0.47:
        return b""
    return data


def fuzzed_file(seed: int) -> bytes:
    """The content of fuzz file number `seed`."""
    rng = random.Random(seed)
    document: object = {"type": "bundle", "id": f"bundle--{uuid.UUID(int=rng.getrandbits(128))}",
                        "objects": base_objects(rng)}  # fmt: skip
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        if isinstance(document, dict) and isinstance(document.get("objects"), list) \
                and document["objects"]:
            document = rng.choice(STRUCTURAL)(rng, document)
    return _encode(rng, document)
