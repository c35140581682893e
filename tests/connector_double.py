"""The platform side of an enrichment connector, on top of the OpenCTI double.

OpenCTIDouble (tests/opencti_double.py, not edited here) answers the GraphQL pycti's API client
sends; this subclass adds what the connector helper and the platform's enrichment path do:
`registerConnector` (declares the connector's listen queue in the real RabbitMQ and returns its
connection, queue names and a JWKS, as the platform does), `pingConnector`, `deleteConnector`,
and works (`workEdit` toReceived / toProcessed / addExpectations / reportExpectation / ping).

Works follow the platform's rule: processed and every expectation reported -> complete. So a
connector that adds an expectation keeps its work open after the helper marks it processed,
until it reports the expectation.

`enrichment_message` builds the message exactly as the platform's enrichment path sends it
(opencti-graphql domain/enrichment.js: `internal` {work_id, applicant_id, draft_id, trigger,
mode}, `event` {event_type, entity_id (standard id), entity_type, stix_entity (a JSON string;
with enrichment resolution `none` no stix_objects)}), which is what pycti's
ListenQueue._data_handler parses.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pika
from cryptography.hazmat.primitives.asymmetric import rsa
from graphql import FieldNode

from tests.opencti_double import DoubleError, OpenCTIDouble

EXCHANGE = "amqp.connector.exchange"
APPLICANT_ID = "88ec0c6a-13ce-5e39-b486-354fe4a7084f"  # the double's `me` (admin)


def amqp_available(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            host=host, port=port, credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1, socket_timeout=2))
    except Exception:  # noqa: BLE001 - any failure means "absent" for a skip
        return False
    connection.close()
    return True


def _jwks() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "double", "alg": "RS256", "use": "sig"})
    return json.dumps({"keys": [jwk]})


class ConnectorDouble(OpenCTIDouble):
    """OpenCTIDouble plus connector registration, pings and works, over a real RabbitMQ."""

    def __init__(self, token: str = "double-token", amqp_host: str = "127.0.0.1",
                 amqp_port: int = 5672) -> None:
        super().__init__(token)
        self.amqp = {"host": amqp_host, "port": amqp_port, "vhost": "/", "use_ssl": False,
                     "user": "guest", "pass": "guest"}
        self.connectors: dict[str, dict] = {}
        self.works: dict[str, dict] = {}
        self.pings = 0
        self._jwks = _jwks()
        self._work_changed = threading.Condition(self._lock)

    # --- AMQP ------------------------------------------------------------------------------
    def _channel(self) -> tuple[Any, Any]:
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            host=self.amqp["host"], port=self.amqp["port"],
            credentials=pika.PlainCredentials(self.amqp["user"], self.amqp["pass"])))
        return connection, connection.channel()

    @staticmethod
    def queue_names(connector_id: str) -> dict[str, str]:
        return {"listen": f"listen_{connector_id}",
                "listen_routing": f"listen_routing_{connector_id}",
                "push": f"push_{connector_id}", "push_routing": f"push_routing_{connector_id}"}

    def publish(self, connector_id: str, message: dict | bytes) -> None:
        """Send a message to the connector's listen queue, as the platform does."""
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        connection, channel = self._channel()
        try:
            channel.basic_publish(EXCHANGE, self.queue_names(connector_id)["listen_routing"],
                                  body, pika.BasicProperties(delivery_mode=2,
                                                             content_encoding="utf-8"))
        finally:
            connection.close()

    def delete_queues(self) -> None:
        connection, channel = self._channel()
        try:
            for connector_id in self.connectors:
                channel.queue_delete(self.queue_names(connector_id)["listen"])
        finally:
            connection.close()

    # --- connector GraphQL -----------------------------------------------------------------
    def _q_registerConnector(self, args: dict) -> dict:  # noqa: N802
        data = args["input"]
        names = self.queue_names(data["id"])
        connection, channel = self._channel()
        try:
            channel.exchange_declare(EXCHANGE, "direct", durable=True)
            channel.queue_declare(names["listen"], durable=True)
            channel.queue_bind(names["listen"], EXCHANGE, routing_key=names["listen_routing"])
        finally:
            connection.close()
        self.connectors[data["id"]] = {**data, "active": True}
        return {
            "id": data["id"],
            "connector_state": None,
            "jwks": self._jwks,
            "config": {
                "connection": dict(self.amqp),
                "s3": {"endpoint": None, "port": None, "use_ssl": None, "bucket_name": None,
                       "bucket_region": None, "access_key": None, "secret_key": None},
                "listen": names["listen"], "listen_routing": names["listen_routing"],
                "listen_exchange": EXCHANGE, "push": names["push"],
                "push_routing": names["push_routing"], "push_exchange": "amqp.worker.exchange",
            },
            "connector_user_id": APPLICANT_ID,
        }

    def _q_pingConnector(self, args: dict) -> dict:  # noqa: N802
        self.pings += 1
        return {"id": args["id"], "connector_state": None, "connector_info": {}}

    def _q_deleteConnector(self, args: dict) -> str:  # noqa: N802
        self.connectors.pop(args["id"], None)
        return args["id"]

    def _q_stixNestedRefRelationships(self, args: dict) -> dict:  # noqa: N802
        """The helper's STIX export asks for nested refs; observables here have none."""
        return self._list([], args)

    # --- works -----------------------------------------------------------------------------
    def create_work(self, connector_id: str, name: str = "Manual enrichment") -> str:
        """A work as the platform creates one per connector before sending the message."""
        work_id = f"work_{connector_id}_{uuid.uuid4()}"
        with self._lock:
            self.works[work_id] = {
                "id": work_id, "connector_id": connector_id, "name": name, "status": "wait",
                "received_time": None, "processed_time": None, "completed_time": None,
                "expected": 0, "reported": 0, "messages": [], "errors": [],
            }
        return work_id

    def work(self, work_id: str) -> dict:
        with self._lock:
            return json.loads(json.dumps(self.works[work_id]))

    def wait_for_work(self, work_id: str, predicate, timeout_s: float) -> dict:
        """Block until predicate(work) holds (woken on every work change); the work or raise."""
        with self._work_changed:
            ok = self._work_changed.wait_for(lambda: predicate(self.works[work_id]), timeout_s)
            if not ok:
                raise TimeoutError(f"work {work_id} still {self.works[work_id]}")
            return json.loads(json.dumps(self.works[work_id]))

    def _complete_if_done(self, work: dict, now: str) -> None:
        if work["processed_time"] and work["reported"] >= work["expected"]:
            work["status"] = "complete"
            work["completed_time"] = work["completed_time"] or now

    def _edit(self, name: str, args: dict, field: FieldNode, variables: dict) -> dict:
        if name != "workEdit":
            return super()._edit(name, args, field, variables)
        work = self.works.get(args.get("id") or "")
        if work is None:
            raise DoubleError(f"Work {args.get('id')} not found", "WORK_NOT_ALIVE")
        double = self

        def stamp() -> str:
            double._work_changed.notify_all()
            return datetime.now(UTC).isoformat()

        def to_received(sub: dict) -> str:
            now = stamp()
            work["status"] = "progress" if work["status"] == "wait" else work["status"]
            work["received_time"] = work["received_time"] or now
            if sub.get("message"):
                work["messages"].append({"timestamp": now, "message": sub["message"]})
            return work["id"]

        def to_processed(sub: dict) -> str:
            now = stamp()
            work["processed_time"] = now
            entry = {"timestamp": now, "message": sub.get("message")}
            (work["errors"] if sub.get("inError") else work["messages"]).append(entry)
            double._complete_if_done(work, now)
            return work["id"]

        def add_expectations(sub: dict) -> str:
            stamp()
            if work["status"] == "complete":
                    raise DoubleError("work is complete", "WORK_NOT_ALIVE")
            work["expected"] += int(sub.get("expectations") or 0)
            return work["id"]

        def report_expectation(sub: dict) -> str:
            now = stamp()
            work["reported"] += 1
            if sub.get("error"):
                work["errors"].append({"timestamp": now, **sub["error"]})
            double._complete_if_done(work, now)
            return work["id"]

        def ping(sub: dict) -> str:
            return work["id"]

        handlers = {"toReceived": to_received, "toProcessed": to_processed,
                    "addExpectations": add_expectations,
                    "reportExpectation": report_expectation, "ping": ping}
        for selection in field.selection_set.selections:
            if isinstance(selection, FieldNode) and selection.name.value not in handlers:
                    raise DoubleError(f"workEdit.{selection.name.value}", "UNSUPPORTED")
        return handlers

    # --- the platform's message ------------------------------------------------------------
    def enrichment_message(self, work_id: str, entity: dict, applicant_id: str = APPLICANT_ID,
                           trigger: str = "update", mode: str = "manual") -> dict:
        """The message the platform sends for an enrichment of `entity` (a double node)."""
        stix_entity = {"type": entity["standard_id"].split("--")[0], "id": entity["standard_id"],
                       "spec_version": "2.1"}
        if entity.get("value") is not None:
            stix_entity["value"] = entity["value"]
        if entity.get("hashes"):
            stix_entity["hashes"] = dict(entity["hashes"])
        return {
            "internal": {"work_id": work_id, "applicant_id": applicant_id, "draft_id": None,
                         "trigger": trigger, "mode": mode},
            "event": {"event_type": "INTERNAL_ENRICHMENT", "entity_id": entity["standard_id"],
                      "entity_type": entity["entity_type"],
                      "stix_entity": json.dumps(stix_entity)},
        }
