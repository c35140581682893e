"""Column contracts of the tables that flow between assets.

Each asset output is a pandas DataFrame written as one Parquet file per partition. Keeping the
column lists here lets every module (and every test) agree on them without importing Dagster.
"""

from __future__ import annotations

# `observables`: one row per observable created in the partition's window.
OBSERVABLE_COLUMNS: dict[str, str] = {
    "internal_id": "string",
    "stix_id": "string",
    "entity_type": "string",  # OpenCTI entity type: IPv4-Addr, ..., StixFile
    "value": "string",  # raw value as the source holds it
    "normalized_value": "string",  # null when rejected
    "hash_type": "string",  # StixFile only: MD5, SHA-1, SHA-256
    "tlp": "string",  # effective TLP: TLP:CLEAR ... TLP:RED
    "tlp_reason": "string",  # null: from its markings; "unmarked"; "tlp_unresolved: <ids>"
    "marking_ids": "list",  # STIX ids of all markings (TLP, PAP, statements)
    "labels": "list",
    "existing_score": "Int64",  # x_opencti_score already on the observable
    "created_at": "datetime64[ns, UTC]",
    "status": "string",  # "ok" or "rejected"
    "reason": "string",  # why rejected; null when ok
}
OBSERVABLE_OK = "ok"
OBSERVABLE_REJECTED = "rejected"

# `<provider>_lookups`: one row per observable of the partition, whatever happened to it.
LOOKUP_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "entity_type": "string",
    "normalized_value": "string",
    "provider": "string",
    "status": "string",  # providers.base.STATUSES
    "reason": "string",  # skip reason, defer reason or error class
    "fields": "string",  # JSON object of providers.fields.PROVIDER_FIELDS[provider]
    "fetched_at": "datetime64[ns, UTC]",
    "raw_digest": "string",  # key of the raw body in the response cache
    "from_cache": "boolean",
    "latency_ms": "Float64",
    "http_status": "Int64",
    "message": "string",
}
