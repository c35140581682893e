"""A GraphQL double of the OpenCTI platform, served over HTTP on 127.0.0.1 for pycti to talk to.

pycti runs unmodified against it. Each request is parsed with graphql-core and, before anything
else, checked as the platform checks it (tests/opencti_schema.py): validated against the schema
of the operations we use (tests/opencti_schema.graphql) and its variables coerced, with the
platform's scalars (RFC 3339 DateTime, StixId, StixRef). An unknown field or argument, a wrong
enum value, a malformed FilterGroup or a bad DateTime is answered as the platform answers it
(HTTP 200, `errors` with code GRAPHQL_VALIDATION_FAILED or BAD_USER_INPUT) AND recorded in
`invalid`. A valid request is dispatched on its one top-level field (and the sub-field of
`*Edit` mutations), answered from an in-memory graph keyed by internal and standard ids, and
projected onto the query's selection set (inline fragments resolved against the node's type and
parent types), so a field the caller forgot to select is really missing from the answer.
Upserts follow the platform: an `*Add` whose stix id or derived standard id matches an existing
node updates it (scalars replaced, references merged). A valid query the double does not know is
answered with a GraphQL error AND recorded in `unsupported`. The test fixtures assert both lists
are empty, so nothing passes silently.

Concurrency is the platform's: the HTTP server is threaded (keep-alive, HTTP/1.1), each request
waits `latency_s` (a round trip and the platform's own work) outside the graph's lock, so
concurrent requests overlap as on a real server, while every read and write of the graph holds
the lock: two concurrent creates of the same standard id give one node, the second an upsert.
`python -m tests.opencti_double` serves it in its own process (benchmarks), with admin
endpoints under /_double/ to seed observables and read the graph back.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stix2
from graphql import FieldNode, GraphQLError, InlineFragmentNode, OperationDefinitionNode
from graphql import parse as parse_graphql
from graphql.utilities import value_from_ast_untyped
from pycti import (
    Campaign,
    ExternalReference,
    Identity,
    Indicator,
    IntrusionSet,
    Malware,
    Note,
    StixCoreRelationship,
    ThreatActorGroup,
    ThreatActorIndividual,
)
from stix2.canonicalization.Canonicalize import canonicalize

from tests.opencti_schema import document_errors, variable_errors

PLATFORM_VERSION = "7.261026.0"
_SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")

_OBSERVABLE_PARENTS = ["Basic-Object", "Stix-Object", "Stix-Core-Object", "Stix-Cyber-Observable"]
_SDO_PARENTS = ["Basic-Object", "Stix-Object", "Stix-Core-Object", "Stix-Domain-Object"]
_RELATIONSHIP_PARENTS = ["basic-relationship", "stix-relationship", "stix-core-relationship"]
_EXTRA_PARENTS = {
    "Threat-Actor-Group": ["Threat-Actor"],
    "Threat-Actor-Individual": ["Threat-Actor"],
    "Organization": ["Identity"],
    "Individual": ["Identity"],
    "System": ["Identity"],
    "Note": ["Container"],
}
_META_TYPES = {
    "Marking-Definition": ["Basic-Object", "Stix-Object", "Stix-Meta-Object"],
    "Label": ["Basic-Object", "Stix-Object", "Stix-Meta-Object"],
    "External-Reference": ["Basic-Object", "Stix-Object", "Stix-Meta-Object"],
    "Vocabulary": ["Basic-Object", "Stix-Object", "Stix-Meta-Object"],
}
# GraphQL input key of each observable type in stixCyberObservableAdd.
_OBSERVABLE_INPUT_KEYS = {
    "IPv4-Addr": "IPv4Addr",
    "IPv6-Addr": "IPv6Addr",
    "Domain-Name": "DomainName",
    "Hostname": "Hostname",
    "Url": "Url",
    "StixFile": "StixFile",
}
_STIX_OBSERVABLE_TYPES = {
    "IPv4-Addr": "ipv4-addr",
    "IPv6-Addr": "ipv6-addr",
    "Domain-Name": "domain-name",
    "Hostname": "hostname",
    "Url": "url",
    "StixFile": "file",
}
_HASH_PREFERENCE = ("SHA-256", "SHA-1", "MD5")
# Entity types whose upserts are gated by confidence (relationships too; observables are not).
_CONFIDENT_TYPES = {"Note", "Indicator", "Organization", "Individual", "System", "Intrusion-Set",
                    "Malware", "Campaign", "Threat-Actor-Group", "Threat-Actor-Individual"}
_REF_FIELDS = ("objectMarking", "objectLabel", "externalReferences", "objects")
_VOCABULARY_CATEGORIES = [
    {
        "key": "indicator_type_ov",
        "entity_types": ["Indicator"],
        "fields": [{"key": "indicator_types", "required": False, "multiple": True}],
    },
    {
        "key": "pattern_type_ov",
        "entity_types": ["Indicator"],
        "fields": [{"key": "pattern_type", "required": True, "multiple": False}],
    },
    {
        "key": "note_types_ov",
        "entity_types": ["Note"],
        "fields": [{"key": "note_types", "required": False, "multiple": True}],
    },
    {
        "key": "malware_type_ov",
        "entity_types": ["Malware"],
        "fields": [{"key": "malware_types", "required": False, "multiple": True}],
    },
]
_TLP_DEFINITIONS = {
    "TLP:CLEAR": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    "TLP:GREEN": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "TLP:AMBER": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "TLP:AMBER+STRICT": "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37",
    "TLP:RED": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}


class DoubleError(Exception):
    """Answered to the client as a GraphQL error."""

    def __init__(self, message: str, name: str = "FUNCTIONAL_ERROR") -> None:
        super().__init__(message)
        self.name = name


def observable_standard_id(entity_type: str, value: str | None, hashes: dict | None) -> str:
    """The platform's standard id of an observable (the STIX 2.1 SCO id)."""
    if entity_type == "StixFile":
        return stix2.File(hashes=hashes).id
    stix_type = _STIX_OBSERVABLE_TYPES[entity_type]
    return f"{stix_type}--{uuid.uuid5(_SCO_NAMESPACE, canonicalize({'value': value}, utf8=False))}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(moment: datetime | str) -> str:
    if isinstance(moment, str):
        return moment
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class OpenCTIDouble:
    """In-memory OpenCTI graph behind a real HTTP server; use as a context manager."""

    def __init__(
        self,
        token: str = "double-token",
        *,
        user_max_confidence: int = 100,
        decay_lifetimes: dict[str, timedelta] | None = None,
        capabilities: tuple[str, ...] = ("KNOWLEDGE", "KNOWLEDGE_KNUPDATE"),
        version: str = PLATFORM_VERSION,
        latency_s: float = 0.0,
    ) -> None:
        """`user_max_confidence`: the token's user's max confidence (caps what it writes);
        `decay_lifetimes`: the decay manager's lifetime per main observable type (None: decay
        off); `capabilities`: the user's; `version`: what `about` reports; `latency_s`: how long
        each HTTP request takes before it is answered (concurrent requests overlap)."""
        self.token = token
        self.user_max_confidence = user_max_confidence
        self.decay_lifetimes = dict(decay_lifetimes or {})
        self.capabilities = capabilities
        self.version = version
        self.latency_s = latency_s
        self.in_flight = 0
        self.max_in_flight = 0  # most GraphQL requests being served at once
        self.unsupported: list[str] = []
        self.invalid: list[str] = []  # requests the platform would reject before running them
        self.calls: list[tuple[str, dict]] = []
        self._lock = threading.RLock()
        self._nodes: dict[str, dict] = {}  # insertion order is creation (_seq) order
        self._by_type: dict[str, dict[str, dict]] = {}
        self._labels_by_value: dict[str, str] = {}
        self._aliases: dict[str, str] = {}  # standard id / stix id -> internal id
        self._sequence = 0
        self._failures: list[tuple[str, int]] = []  # ("http", status) or ("graphql", 0)
        self._server: ThreadingHTTPServer | None = None
        for definition, stix_id in _TLP_DEFINITIONS.items():
            self.add_marking("TLP", definition, stix_id)
        self.add_marking("PAP", "PAP:RED")

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, port: int = 0) -> OpenCTIDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the platform behind its proxy
            # Headers and body leave in two writes: without TCP_NODELAY the second waits for
            # the client's delayed ACK (40 ms) on a kept-alive connection.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/_double/"):
                    self._answer(*double._admin(self.path, body))
                    return
                with double._lock:
                    double.in_flight += 1
                    double.max_in_flight = max(double.max_in_flight, double.in_flight)
                try:
                    if double.latency_s > 0:
                        time.sleep(double.latency_s)  # outside the lock: requests overlap
                    answer = double._handle(self.path, self.headers, body)
                finally:
                    with double._lock:
                        double.in_flight -= 1
                self._answer(*answer)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(*double._admin(self.path, b""))

            def _answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OpenCTIDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- fault injection -------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next n requests get HTTP `status` with a plain-text body."""
        with self._lock:
            self._failures.extend([("http", status)] * n)

    def graphql_error_next(self, n: int = 1) -> None:
        """The next n requests get HTTP 200 with a GraphQL `errors` entry."""
        with self._lock:
            self._failures.extend([("graphql", 0)] * n)

    def fail_on(self, field: str, n: int = 1, status: int = 500) -> None:
        """The next n requests for top-level `field` get HTTP `status`."""
        with self._lock:
            self._failures.extend([(f"field:{field}", status)] * n)

    def clear_failures(self) -> None:
        """Drop the injected failures not yet served."""
        with self._lock:
            self._failures.clear()

    # --- seeding ---------------------------------------------------------------------------
    def _store(self, node: dict, aliases: list[str]) -> dict:
        with self._lock:
            self._sequence += 1
            node.setdefault("id", str(uuid.uuid4()))
            node.setdefault("created_at", _now())
            node.setdefault("updated_at", node["created_at"])
            node.setdefault("x_opencti_stix_ids", [])
            node["_seq"] = self._sequence
            for ref in _REF_FIELDS:
                node.setdefault(ref, [])
            if node["id"] in self._nodes:
                raise ValueError(f"node {node['id']} is already stored")
            self._nodes[node["id"]] = node
            self._by_type.setdefault(node["entity_type"], {})[node["id"]] = node
            for alias in [node["standard_id"], *aliases]:
                if alias:
                    self._aliases[alias] = node["id"]
            return node

    def add_marking(
        self, definition_type: str, definition: str, stix_id: str | None = None
    ) -> dict:
        stix_id = stix_id or f"marking-definition--{uuid.uuid5(_SCO_NAMESPACE, definition)}"
        return self._store(
            {
                "standard_id": stix_id,
                "entity_type": "Marking-Definition",
                "definition_type": definition_type,
                "definition": definition,
                "x_opencti_order": 0,
                "x_opencti_color": "#ffffff",
            },
            [],
        )

    def add_observable(
        self,
        entity_type: str,
        value: str | None,
        created_at: datetime | str,
        markings: tuple[str, ...] = ("TLP:AMBER",),
        labels: tuple[str, ...] = (),
        score: int | None = None,
        hashes: dict[str, str] | None = None,
    ) -> dict:
        """An observable as if an analyst or a feed had created it at `created_at`."""
        if entity_type == "StixFile" and hashes is None:
            raise ValueError("a StixFile needs hashes")
        node = {
            "standard_id": observable_standard_id(entity_type, value, hashes),
            "entity_type": entity_type,
            "value": value,
            "hashes": dict(hashes or {}),
            "x_opencti_score": score,
            "created_at": _iso(created_at),
            "objectMarking": [self._marking_by_definition(name) for name in markings],
            "objectLabel": [self._label(name)["id"] for name in labels],
        }
        return self._store(node, [])

    def add_threat(self, entity_type: str, name: str, aliases: tuple[str, ...] = ()) -> dict:
        """A threat actor group/individual, intrusion set, campaign or malware."""
        generators = {
            "Threat-Actor-Group": ThreatActorGroup.generate_id,
            "Threat-Actor-Individual": ThreatActorIndividual.generate_id,
            "Intrusion-Set": IntrusionSet.generate_id,
            "Campaign": Campaign.generate_id,
            "Malware": Malware.generate_id,
        }
        standard_id = generators[entity_type](name)
        return self._store(
            {"standard_id": standard_id, "entity_type": entity_type, "name": name,
             "aliases": list(aliases)},
            [],
        )

    def add_indicator(self, pattern: str, name: str, main_observable_type: str) -> dict:
        return self._store(
            {"standard_id": Indicator.generate_id(pattern), "entity_type": "Indicator",
             "name": name, "pattern": pattern, "pattern_type": "stix",
             "x_opencti_main_observable_type": main_observable_type},
            [],
        )

    def add_relationship(self, relationship_type: str, from_id: str, to_id: str) -> dict:
        source, target = self.get(from_id), self.get(to_id)
        if source is None or target is None:
            raise KeyError("both ends of a relationship must exist")
        return self._store(
            {
                "standard_id": StixCoreRelationship.generate_id(
                    relationship_type, source["standard_id"], target["standard_id"]
                ),
                "entity_type": relationship_type,
                "relationship_type": relationship_type,
                "fromId": source["id"],
                "toId": target["id"],
            },
            [],
        )

    # --- inspection ------------------------------------------------------------------------
    def get(self, any_id: str) -> dict | None:
        with self._lock:
            internal = self._aliases.get(any_id, any_id)
            return self._nodes.get(internal)

    def objects(self, entity_type: str | None = None) -> list[dict]:
        """Nodes in creation order (nodes are only ever added, so insertion order is _seq)."""
        with self._lock:
            if entity_type is None:
                return list(self._nodes.values())
            return list(self._by_type.get(entity_type, {}).values())

    def count(self, entity_type: str) -> int:
        return len(self.objects(entity_type))

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for node in self.objects():
            result[node["entity_type"]] = result.get(node["entity_type"], 0) + 1
        return result

    def label_values(self, node: dict) -> list[str]:
        return sorted(self._nodes[i]["value"] for i in node["objectLabel"])

    def marking_ids(self, node: dict) -> list[str]:
        return sorted(self._nodes[i]["standard_id"] for i in node["objectMarking"])

    def relationships(
        self, relationship_type: str | None = None, from_id: str | None = None,
        to_id: str | None = None,
    ) -> list[dict]:
        found = []
        for node in self.objects():
            if "relationship_type" not in node:
                continue
            if relationship_type and node["relationship_type"] != relationship_type:
                continue
            if from_id and node["fromId"] != self.get(from_id)["id"]:
                continue
            if to_id and node["toId"] != self.get(to_id)["id"]:
                continue
            found.append(node)
        return found

    def calls_to(self, field: str) -> int:
        return sum(1 for name, _ in self.calls if name == field)

    # --- HTTP ------------------------------------------------------------------------------
    def _handle(self, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        if path.rstrip("/") != "/graphql":
            return 404, {"error": "not found"}
        try:
            request = json.loads(body)
            query, variables = request["query"], request.get("variables") or {}
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise TypeError("query must be a string and variables an object")
        except (ValueError, KeyError, TypeError) as error:
            return 400, {"errors": [{"message": f"bad request: {error}"}]}
        try:
            document, validation = _document(query)
        except GraphQLError as error:
            return self._invalid([{"message": error.message,
                                   "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}])
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        fields = [s for s in operations[0].selection_set.selections if isinstance(s, FieldNode)] \
            if operations else []
        if len(operations) != 1 or len(fields) != 1:
            return self._unsupported("requests with other than one operation and one field")
        field = fields[0]
        with self._lock:
            self.calls.append((field.name.value, variables))
            failure = self._take_failure(field.name.value)
        if failure is not None:
            kind, status = failure
            if kind == "graphql":
                return 200, {"errors": [{"message": "Injected failure", "name": "UNKNOWN_ERROR",
                                         "extensions": {"code": "UNKNOWN_ERROR"}}]}
            return status, b"Injected server error"
        errors = list(validation) or variable_errors(document, variables)
        if errors:
            return self._invalid(errors)
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 200, {
                "errors": [{"message": "You must be logged in to do this.",
                            "name": "AUTH_REQUIRED", "extensions": {"code": "AUTH_REQUIRED"}}]
            }
        fragments = {d.name.value: d for d in document.definitions if hasattr(d, "type_condition")
                     and not isinstance(d, InlineFragmentNode)}
        try:
            with self._lock:
                value = self._resolve_root(field, variables)
                data = self._project(value, field.selection_set, fragments, variables)
        except DoubleError as error:
            if error.name == "UNSUPPORTED":
                return self._unsupported(str(error))
            return 200, {"errors": [{"message": str(error), "name": error.name,
                                     "extensions": {"code": error.name}}]}
        return 200, {"data": {field.alias.value if field.alias else field.name.value: data}}

    def _admin(self, path: str, body: bytes) -> tuple[int, Any]:
        """/_double/ endpoints for a double in its own process: `seed` observables and threat
        entities, read back every `nodes`' ids, `counts` per type, `requests` served."""
        action = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if action == "seed":
            request = json.loads(body or b"{}")
            for item in request.get("observables") or []:
                self.add_observable(item["entity_type"], item.get("value"), item["created_at"],
                                    markings=tuple(item.get("markings") or ()),
                                    labels=tuple(item.get("labels") or ()),
                                    score=item.get("score"), hashes=item.get("hashes"))
            for item in request.get("threats") or []:
                self.add_threat(item["entity_type"], item["name"])
            return 200, {"counts": self.counts()}
        if action == "nodes":
            return 200, [{"id": n["id"], "standard_id": n["standard_id"],
                          "stix_ids": list(n["x_opencti_stix_ids"]),
                          "entity_type": n["entity_type"],
                          "labels": [self._nodes[i]["value"] for i in n["objectLabel"]]}
                         for n in self.objects()]
        if action == "counts":
            return 200, self.counts()
        if action == "requests":
            with self._lock:
                fields: dict[str, int] = {}
                for name, _ in self.calls:
                    fields[name] = fields.get(name, 0) + 1
                return 200, {"total": len(self.calls), "fields": fields,
                             "max_in_flight": self.max_in_flight,
                             "invalid": list(self.invalid), "unsupported": list(self.unsupported)}
        return 404, {"error": f"unknown admin action {action!r}"}

    def _take_failure(self, field_name: str) -> tuple[str, int] | None:
        for index, (kind, status) in enumerate(self._failures):
            if kind in ("http", "graphql") or kind == f"field:{field_name}":
                del self._failures[index]
                return ("http" if kind.startswith("field:") else kind), status
        return None

    def _invalid(self, errors: list[dict]) -> tuple[int, Any]:
        """Answer as the platform does a request it rejects before running it, and record it."""
        with self._lock:
            self.invalid.extend(f"{e['extensions']['code']}: {e['message']}" for e in errors)
        return 200, {"errors": errors}

    def _unsupported(self, what: str) -> tuple[int, Any]:
        self.unsupported.append(what)
        return 200, {"errors": [{"message": f"OpenCTI double does not support {what}",
                                 "name": "UNSUPPORTED", "extensions": {"code": "UNSUPPORTED"}}]}

    # --- resolution ------------------------------------------------------------------------
    def _resolve_root(self, field: FieldNode, variables: dict) -> Any:
        name = field.name.value
        args = self._args(field, variables)
        handler: Callable[[dict], Any] | None = getattr(self, f"_q_{name}", None)
        if name.endswith("Edit"):
            return self._edit(name, args, field, variables)
        if handler is None:
            raise DoubleError(f"top-level field {name!r}", "UNSUPPORTED")
        return handler(args)

    @staticmethod
    def _args(field: FieldNode, variables: dict) -> dict:
        return {a.name.value: value_from_ast_untyped(a.value, variables) for a in field.arguments}

    def _project(self, value: Any, selection_set: Any, fragments: dict, variables: dict) -> Any:
        if selection_set is None or value is None:
            return value
        if isinstance(value, list):
            return [self._project(item, selection_set, fragments, variables) for item in value]
        out: dict[str, Any] = {}
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                key = selection.alias.value if selection.alias else name
                field_value = self._field(value, name, self._args(selection, variables))
                out[key] = self._project(field_value, selection.selection_set, fragments,
                                         variables)
            else:
                fragment = (selection if isinstance(selection, InlineFragmentNode)
                            else fragments[selection.name.value])
                condition = fragment.type_condition
                if condition is None or self._is_a(value, condition.name.value):
                    out.update(self._project(value, fragment.selection_set, fragments, variables))
        return out

    def _is_a(self, value: Any, type_name: str) -> bool:
        if not isinstance(value, dict) or "entity_type" not in value or "_seq" not in value:
            return True  # plain containers (connections, pageInfo) have no type to check
        return type_name in self._type_names(value)

    @staticmethod
    def _type_names(node: dict) -> set[str]:
        """GraphQL type names the node satisfies: its own type and every interface."""
        if "relationship_type" in node:
            return {"StixCoreRelationship", "StixRelationship", "BasicRelationship"}
        return {name.replace("-", "") for name in [node["entity_type"],
                                                    *_parents(node["entity_type"])]}

    def _field(self, value: Any, name: str, args: dict) -> Any:
        if not (isinstance(value, dict) and "_seq" in value):
            if isinstance(value, dict) and callable(value.get(name)):
                return value[name](args)
            return value.get(name) if isinstance(value, dict) else None
        node = value
        if name == "parent_types":
            return _parents(node["entity_type"]) if "relationship_type" not in node \
                else _RELATIONSHIP_PARENTS
        if name == "spec_version":
            return "2.1"
        if name == "observable_value":
            return _observable_value(node)
        if name == "hashes" and node["entity_type"] == "StixFile":
            return [{"algorithm": k, "hash": v} for k, v in sorted(node["hashes"].items())]
        if name in ("objectMarking", "objectLabel"):
            return [self._nodes[i] for i in node[name]]
        if name in ("externalReferences", "objects"):
            return _connection([self._nodes[i] for i in node[name]])
        if name == "createdBy":
            return self._nodes.get(node.get("createdBy") or "")
        if name == "from":
            return self._nodes.get(node.get("fromId") or "")
        if name == "to":
            return self._nodes.get(node.get("toId") or "")
        if name == "indicators":
            indicators = [self._nodes[r["fromId"]] for r in self.relationships("based-on")
                          if r["toId"] == node["id"]]
            return _connection(indicators)
        if name in ("creators", "objectOrganization", "importFiles"):
            return [] if name != "importFiles" else _connection([])
        return node.get(name)

    # --- queries ---------------------------------------------------------------------------
    def _q_about(self, args: dict) -> dict:
        return {"version": self.version}

    def _q_me(self, args: dict) -> dict:
        return {"id": "88ec0c6a-13ce-5e39-b486-354fe4a7084f", "name": "admin",
                "user_email": "admin@opencti.io",
                "capabilities": [{"name": name} for name in self.capabilities]}

    def _q_vocabularyCategories(self, args: dict) -> list[dict]:  # noqa: N802
        return _VOCABULARY_CATEGORIES

    def _q_stixCyberObservables(self, args: dict) -> dict:  # noqa: N802
        nodes = [n for n in self._listed(args) if n["entity_type"] in _OBSERVABLE_INPUT_KEYS]
        return self._list(nodes, args)

    def _q_stixDomainObjects(self, args: dict) -> dict:  # noqa: N802
        nodes = [n for n in self._listed(args)
                 if "Stix-Domain-Object" in _parents(n["entity_type"])]
        return self._list(nodes, args)

    def _q_stixCoreObjects(self, args: dict) -> dict:  # noqa: N802
        nodes = [n for n in self._listed(args) if "Stix-Core-Object" in _parents(n["entity_type"])]
        return self._list(nodes, args)

    def _listed(self, args: dict) -> list[dict]:
        """Every node, or only those a filter on `ids` alone can match (found through the id
        index instead of a scan; `_list` still applies the filter, so the answer is the same)."""
        group = args.get("filters") or {}
        specs = group.get("filters") or []
        if group.get("filterGroups") or len(specs) != 1 or (group.get("mode") or "and") != "and":
            return self.objects()
        spec = specs[0]
        key = spec["key"][0] if isinstance(spec["key"], list) else spec["key"]
        if key != "ids" or (spec.get("operator") or "eq") != "eq":
            return self.objects()
        found = {self._aliases.get(v, v) for v in spec.get("values") or []}
        return sorted((self._nodes[i] for i in found if i in self._nodes),
                      key=lambda n: n["_seq"])

    def _q_stixCoreRelationships(self, args: dict) -> dict:  # noqa: N802
        def ids(key: str) -> set[str] | None:
            # The platform filters connections.internal_id: a standard id matches nothing.
            values = args.get(key)
            if values is None:
                return None
            return set([values] if isinstance(values, str) else values)

        def types_match(node: dict, wanted: list[str] | None) -> bool:
            if not wanted:
                return True
            names = {node["entity_type"], *_parents(node["entity_type"])}
            return bool(names & set(wanted))

        nodes = [n for n in self.objects() if "relationship_type" in n]
        from_ids, to_ids, either = ids("fromId"), ids("toId"), ids("fromOrToId")
        kinds = args.get("relationship_type")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        selected = []
        for rel in nodes:
            source, target = self._nodes[rel["fromId"]], self._nodes[rel["toId"]]
            if kinds and rel["relationship_type"] not in kinds:
                continue
            if from_ids is not None and rel["fromId"] not in from_ids:
                continue
            if to_ids is not None and rel["toId"] not in to_ids:
                continue
            if not types_match(source, args.get("fromTypes")) or not types_match(
                target, args.get("toTypes")
            ):
                continue
            if either is not None:
                if rel["fromId"] in either:
                    other = target
                elif rel["toId"] in either:
                    other = source
                else:
                    continue
                if not types_match(other, args.get("elementWithTargetTypes")):
                    continue
            selected.append(rel)
        return self._list(selected, args)

    def _q_stixCyberObservable(self, args: dict) -> dict | None:  # noqa: N802
        return self.get(args["id"])

    def _q_markingDefinitions(self, args: dict) -> dict:  # noqa: N802
        return self._list(self.objects("Marking-Definition"), args)

    def _q_labels(self, args: dict) -> dict:
        return self._list(self.objects("Label"), args)

    def _q_vocabularies(self, args: dict) -> dict:
        return self._list(self.objects("Vocabulary"), args)

    def _list(self, nodes: list[dict], args: dict) -> dict:
        types = args.get("types")
        if types:
            types = [types] if isinstance(types, str) else types
            nodes = [n for n in nodes if {n["entity_type"], *_parents(n["entity_type"])}
                     & set(types)]
        if args.get("filters"):
            nodes = [n for n in nodes if self._matches_group(n, args["filters"])]
        order_by = args.get("orderBy")
        if order_by:
            nodes = sorted(nodes, key=lambda n: (str(self._field(n, order_by, {}) or ""),
                                                 n["_seq"]),
                           reverse=args.get("orderMode") == "desc")
        offset = int(base64.b64decode(args["after"]).decode()) if args.get("after") else 0
        first = args.get("first") or 100
        page = nodes[offset:offset + first]
        return _connection(page, offset, len(nodes))

    # --- filters ---------------------------------------------------------------------------
    def _matches_group(self, node: dict, group: dict) -> bool:
        results = [self._matches_filter(node, f) for f in group.get("filters") or []]
        results += [self._matches_group(node, g) for g in group.get("filterGroups") or []]
        if not results:
            return True
        return all(results) if (group.get("mode") or "and") == "and" else any(results)

    def _matches_filter(self, node: dict, spec: dict) -> bool:
        key = spec["key"][0] if isinstance(spec["key"], list) else spec["key"]
        operator = spec.get("operator") or "eq"
        values = spec.get("values") or []
        if key == "ids":
            candidates = {node["id"], node["standard_id"], *node["x_opencti_stix_ids"]}
            hits = [v in candidates for v in values]
        elif key == "entity_type":
            names = {node["entity_type"], *_parents(node["entity_type"])}
            hits = [v in names for v in values]
        elif key in ("created_at", "updated_at"):
            actual = _parse_time(node[key])
            if operator not in _COMPARATORS:
                raise DoubleError(f"filter operator {operator!r} on {key!r}", "UNSUPPORTED")
            hits = [_COMPARATORS[operator](actual, _parse_time(v)) for v in values]
            operator = "eq"
        elif key in ("value", "definition_type", "definition", "name", "category"):
            hits = [str(node.get(key)) == str(v) for v in values]
        else:
            raise DoubleError(f"filter key {key!r}", "UNSUPPORTED")
        if operator == "not_eq":
            return not any(hits)
        if operator != "eq":
            raise DoubleError(f"filter operator {operator!r} on {key!r}", "UNSUPPORTED")
        return all(hits) if spec.get("mode") == "and" else any(hits)

    # --- mutations -------------------------------------------------------------------------
    def _resolve_refs(self, ids: list[str] | None) -> list[str]:
        resolved = []
        for ref in ids or []:
            node = self.get(ref)
            if node is None:
                raise DoubleError(f"Element {ref} not found", "MISSING_REFERENCE_ERROR")
            resolved.append(node["id"])
        return resolved

    def _upsert(self, candidates: list[str | None], fields: dict, refs: dict,
                derive: Callable[[dict], str] | None = None) -> dict:
        """Create, or update the node any candidate id resolves to; returns the node.

        The platform's upsert rules: a node with a confidence (`_CONFIDENT_TYPES`) changes its
        fields only when the incoming confidence, capped at the user's max confidence, is at
        least the stored one; labels and other references are only ever added (markings
        included, so an unmarked node takes the markings it is sent); `derive` recomputes a
        content-derived standard id after an update, the old one kept in x_opencti_stix_ids.
        """
        existing = next((self.get(c) for c in candidates if c and self.get(c)), None)
        resolved = {key: self._resolve_refs(value) for key, value in refs.items()}
        entity_type = fields.get("entity_type") or (existing or {}).get("entity_type")
        confident = entity_type in _CONFIDENT_TYPES or "relationship_type" in fields
        if confident:
            incoming = fields.get("confidence")
            fields["confidence"] = min(self.user_max_confidence,
                                       self.user_max_confidence if incoming is None else incoming)
        if existing is None:
            node = {**{k: v for k, v in fields.items() if v is not None}}
            node["standard_id"] = next(c for c in candidates if c)
            stix_ids = [c for c in candidates if c and c != node["standard_id"]]
            node["x_opencti_stix_ids"] = sorted(set(stix_ids))
            for key, value in resolved.items():
                node[key] = list(dict.fromkeys(value))
            self._apply_indicator_rules(node, created=True)
            return self._store(node, stix_ids)
        stored = existing.get("confidence")
        if not confident or stored is None or fields["confidence"] >= stored:
            valid_from = existing.get("valid_from")
            for key, value in fields.items():
                if value is not None:
                    existing[key] = value
            self._apply_indicator_rules(existing, created=existing.get("valid_from") != valid_from)
        for key, value in resolved.items():
            existing[key] = list(dict.fromkeys(existing.get(key, []) + value))
        for candidate in candidates:
            if candidate and candidate != existing["standard_id"] and self.get(candidate) is None:
                existing["x_opencti_stix_ids"].append(candidate)
                self._aliases[candidate] = existing["id"]
        if derive is not None:
            regenerated = derive(existing)
            if regenerated != existing["standard_id"]:
                existing["x_opencti_stix_ids"].append(existing["standard_id"])
                existing["standard_id"] = regenerated
                self._aliases[regenerated] = existing["id"]
        existing["updated_at"] = _now()
        return existing

    def _apply_indicator_rules(self, node: dict, created: bool) -> None:
        """Indicator lifetime: the decay manager (when on) sets valid_until from its rule when
        the indicator starts (created, or valid_from moved); one whose valid_until is past is
        revoked."""
        if node.get("entity_type") != "Indicator":
            return
        lifetime = self.decay_lifetimes.get(node.get("x_opencti_main_observable_type") or "")
        if created and lifetime is not None and node.get("valid_from"):
            until = _parse_time(node["valid_from"]) + lifetime
            node["valid_until"] = until.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        until = node.get("valid_until")
        node["revoked"] = bool(until) and _parse_time(until) <= datetime.now(UTC)

    def _q_stixCyberObservableAdd(self, args: dict) -> dict:  # noqa: N802
        entity_type = args["type"]
        key = _OBSERVABLE_INPUT_KEYS.get(entity_type)
        if key is None:
            raise DoubleError(f"observable type {entity_type!r}", "UNSUPPORTED")
        body = args.get(key) or {}
        hashes = {h["algorithm"]: h["hash"] for h in body.get("hashes") or []}
        value = body.get("value")
        fields = {"entity_type": entity_type, "value": value,
                  "x_opencti_score": args.get("x_opencti_score"),
                  "x_opencti_description": args.get("x_opencti_description")}
        if entity_type == "StixFile":
            existing = self.get(args.get("stix_id") or "")
            fields["hashes"] = {**(existing or {}).get("hashes", {}), **hashes}
            standard = observable_standard_id(entity_type, None, fields["hashes"])
        else:
            if not value:
                raise DoubleError("observable value is required", "VALIDATION_ERROR")
            standard = observable_standard_id(entity_type, value, None)
        refs = {k: args.get(k) for k in ("objectMarking", "objectLabel", "externalReferences")}
        fields["createdBy"] = self._created_by(args.get("createdBy"))
        return self._upsert([standard, args.get("stix_id")], fields, refs)

    def _q_indicatorAdd(self, args: dict) -> dict:  # noqa: N802
        data = args["input"]
        fields = {k: data.get(k) for k in (
            "name", "description", "pattern", "pattern_type", "valid_from", "valid_until",
            "x_opencti_score", "x_opencti_main_observable_type", "confidence",
            "indicator_types", "created", "modified", "x_opencti_detection")}
        fields["entity_type"] = "Indicator"
        return self._add(data, [Indicator.generate_id(data["pattern"]), data.get("stix_id")],
                         fields)

    def _q_noteAdd(self, args: dict) -> dict:  # noqa: N802
        data = args["input"]
        fields = {k: data.get(k) for k in ("content", "attribute_abstract", "note_types",
                                            "confidence", "created", "modified")}
        fields["entity_type"] = "Note"
        if not data.get("objects"):
            raise DoubleError("A note must reference objects", "VALIDATION_ERROR")
        # The platform derives a note's identity from content, created and abstract: a note
        # whose derived id exists is merged into it (its objects grow).
        return self._add(data, [_note_standard_id(fields), data.get("stix_id")], fields,
                         ("objects",), derive=_note_standard_id)

    def _identity(self, entity_type: str, data: dict) -> dict:
        identity_class = {"Organization": "organization", "Individual": "individual",
                          "System": "system"}[entity_type]
        fields = {"entity_type": entity_type, "name": data["name"],
                  "description": data.get("description"), "identity_class": identity_class}
        standard = Identity.generate_id(data["name"], identity_class)
        return self._add(data, [standard, data.get("stix_id")], fields)

    def _q_organizationAdd(self, args: dict) -> dict:  # noqa: N802
        return self._identity("Organization", args["input"])

    def _q_individualAdd(self, args: dict) -> dict:  # noqa: N802
        return self._identity("Individual", args["input"])

    def _q_systemAdd(self, args: dict) -> dict:  # noqa: N802
        return self._identity("System", args["input"])

    def _q_stixCoreRelationshipAdd(self, args: dict) -> dict:  # noqa: N802
        data = args["input"]
        source, target = self.get(data["fromId"]), self.get(data["toId"])
        if source is None or target is None:
            missing = data["fromId"] if source is None else data["toId"]
            raise DoubleError(f"Element {missing} not found", "MISSING_REFERENCE_ERROR")
        kind = data["relationship_type"]
        fields = {"entity_type": kind, "relationship_type": kind, "fromId": source["id"],
                  "toId": target["id"], "description": data.get("description"),
                  "confidence": data.get("confidence"), "start_time": data.get("start_time"),
                  "stop_time": data.get("stop_time")}
        standard = StixCoreRelationship.generate_id(kind, source["standard_id"],
                                                    target["standard_id"])
        return self._add(data, [standard, data.get("stix_id")], fields)

    def _q_labelAdd(self, args: dict) -> dict:  # noqa: N802
        return self._label(args["input"]["value"], args["input"].get("color"))

    def _q_externalReferenceAdd(self, args: dict) -> dict:  # noqa: N802
        data = args["input"]
        standard = ExternalReference.generate_id(data.get("url"), data.get("source_name"),
                                                 data.get("external_id"))
        if standard is None:
            raise DoubleError("external reference needs a url or source_name + external_id",
                              "VALIDATION_ERROR")
        fields = {"entity_type": "External-Reference", "source_name": data.get("source_name"),
                  "url": data.get("url"), "external_id": data.get("external_id"),
                  "description": data.get("description")}
        return self._upsert([standard, data.get("stix_id")], fields, {})

    def _q_vocabularyAdd(self, args: dict) -> dict:  # noqa: N802
        data = args["input"]
        existing = [v for v in self.objects("Vocabulary")
                    if v["name"] == data["name"] and v["category"] == data["category"]]
        if existing:
            return existing[0]
        standard = f"vocabulary--{uuid.uuid5(_SCO_NAMESPACE, data['category'] + data['name'])}"
        return self._store({"standard_id": standard, "entity_type": "Vocabulary",
                            "name": data["name"], "category": data["category"]}, [])

    def _add(self, data: dict, candidates: list[str | None], fields: dict,
             extra_refs: tuple[str, ...] = (),
             derive: Callable[[dict], str] | None = None) -> dict:
        refs = {k: data.get(k) for k in ("objectMarking", "objectLabel", "externalReferences",
                                          *extra_refs)}
        fields["createdBy"] = self._created_by(data.get("createdBy"))
        return self._upsert(candidates, fields, refs, derive)

    def _created_by(self, created_by: str | None) -> str | None:
        return self._resolve_refs([created_by])[0] if created_by else None

    def _label(self, value: str, color: str | None = None) -> dict:
        with self._lock:
            if value in self._labels_by_value:
                return self._nodes[self._labels_by_value[value]]
            standard = f"label--{uuid.uuid5(_SCO_NAMESPACE, canonicalize({'value': value.lower()}, utf8=False))}"  # noqa: E501
            label = self._store({"standard_id": standard, "entity_type": "Label", "value": value,
                                 "color": color or "#000000"}, [])
            self._labels_by_value[value] = label["id"]
            return label

    def _marking_by_definition(self, definition: str) -> str:
        for marking in self.objects("Marking-Definition"):
            if marking["definition"] == definition:
                return marking["id"]
        raise KeyError(definition)

    def _edit(self, name: str, args: dict, field: FieldNode, variables: dict) -> dict:
        node = self.get(args.get("id") or "")
        if node is None:
            raise DoubleError(f"Element {args.get('id')} not found", "MISSING_REFERENCE_ERROR")
        double = self

        def field_patch(sub_args: dict) -> dict:
            patches = sub_args["input"]
            for patch in patches if isinstance(patches, list) else [patches]:
                values = patch.get("value") or []
                node[patch["key"]] = values[0] if len(values) == 1 else values
            return node

        def relation_add(sub_args: dict) -> dict:
            data = sub_args["input"]
            target = double._resolve_refs([data["toId"]])[0]
            key = {"object-label": "objectLabel", "object-marking": "objectMarking",
                   "external-reference": "externalReferences"}.get(data["relationship_type"])
            if key is None:
                raise DoubleError(f"relationAdd {data['relationship_type']!r}", "UNSUPPORTED")
            node[key] = list(dict.fromkeys(node[key] + [target]))
            return {"id": str(uuid.uuid4())}

        def relation_delete(sub_args: dict) -> dict:
            # The only way to take a label (or marking) off: upserts never remove one.
            target = double._resolve_refs([sub_args["toId"]])[0]
            key = {"object-label": "objectLabel", "object-marking": "objectMarking",
                   "external-reference": "externalReferences"}.get(sub_args["relationship_type"])
            if key is None:
                raise DoubleError(f"relationDelete {sub_args['relationship_type']!r}",
                                  "UNSUPPORTED")
            node[key] = [ref for ref in node[key] if ref != target]
            return node

        handlers = {"fieldPatch": field_patch, "relationAdd": relation_add,
                    "relationDelete": relation_delete}
        for selection in field.selection_set.selections:
            if isinstance(selection, FieldNode) and selection.name.value not in handlers:
                raise DoubleError(f"{name}.{selection.name.value}", "UNSUPPORTED")
        return handlers


@functools.lru_cache(maxsize=1024)
def _document(query: str) -> tuple[Any, tuple[dict, ...]]:
    """A query's parsed document and validation errors, kept per query text as the platform's
    Apollo Server keeps them in its document store (variables are still coerced per request).
    The document is only read afterwards, never changed."""
    document = parse_graphql(query)
    return document, tuple(document_errors(document))


class _Server(ThreadingHTTPServer):
    """Threaded, with a listen backlog for many clients connecting at once."""

    request_queue_size = 256


def _note_standard_id(note: dict) -> str:
    return Note.generate_id(note.get("created"), note["content"],
                            note.get("attribute_abstract"))


def _parents(entity_type: str) -> list[str]:
    if entity_type in _META_TYPES:
        return _META_TYPES[entity_type]
    if entity_type in _OBSERVABLE_INPUT_KEYS:
        return _OBSERVABLE_PARENTS
    return _SDO_PARENTS + _EXTRA_PARENTS.get(entity_type, [])


def _observable_value(node: dict) -> str | None:
    if node["entity_type"] == "StixFile":
        return next((node["hashes"][h] for h in _HASH_PREFERENCE if h in node["hashes"]), None)
    return node.get("value")


def _connection(nodes: list[dict], offset: int = 0, total: int | None = None) -> dict:
    total = len(nodes) if total is None else total
    end = offset + len(nodes)

    def cursor(position: int) -> str:
        return base64.b64encode(str(position).encode()).decode()

    return {
        "edges": [{"node": node, "cursor": cursor(offset + i + 1)} for i, node in
                  enumerate(nodes)],
        "pageInfo": {
            "startCursor": cursor(offset),
            "endCursor": cursor(end),
            "hasNextPage": end < total,
            "hasPreviousPage": offset > 0,
            "globalCount": total,
        },
    }


_COMPARATORS: dict[str, Callable[[datetime, datetime], bool]] = {
    "eq": lambda a, b: a == b,
    "not_eq": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def main(argv: list[str] | None = None) -> int:
    """Serve the double in this process until killed; prints its URL on the first line."""
    parser = argparse.ArgumentParser(description="OpenCTI double (GraphQL) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--token", default="double-token")
    args = parser.parse_args(argv)
    double = OpenCTIDouble(args.token, latency_s=args.latency_ms / 1000).start(args.port)
    print(f"# opencti double on {double.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
