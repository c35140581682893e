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
    "status": "string",  # "ok", "rejected" (invalid value) or "skipped" (out-of-scope type)
    "reason": "string",  # why rejected or skipped; null when ok
}
OBSERVABLE_OK = "ok"
OBSERVABLE_REJECTED = "rejected"
OBSERVABLE_SKIPPED = "skipped"  # a SCO type no provider looks up; reason OBSERVABLE_OUT_OF_SCOPE
OBSERVABLE_OUT_OF_SCOPE = "out_of_scope"
OBSERVABLE_STATUSES = (OBSERVABLE_OK, OBSERVABLE_REJECTED, OBSERVABLE_SKIPPED)

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

# `observable_scores` (and the merged columns it keeps): one row per observable of the day.
SCORE_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "internal_id": "string",
    "entity_type": "string",
    "normalized_value": "string",
    "observable_status": "string",
    "tlp": "string",
    "existing_score": "Int64",
    "score": "Int64",  # 0-100, null when rejected
    "confidence": "Int64",  # 0-100
    "verdict": "string",  # malicious, suspicious, benign, unknown
    "components": "list",  # evidence items: rule, provider, field, value_json, contribution
    "explanation": "string",
    "special_use": "boolean",
    "linked": "boolean",
    "link_summary": "string",
    "provider_status": "string",  # JSON: provider -> status[:reason]
}
# What the score policy (scoring.policy) adds to each score row.
SCORE_POLICY_COLUMNS: dict[str, str] = {
    "final_score": "Int64",  # the score written back
    "policy_action": "string",  # scoring.policy.ACTIONS
}

# `merged_enrichment`: the observable's columns, then per provider these lookup columns (as
# `<provider>__<name>`) and its typed fields (providers.fields.PROVIDER_FIELDS).
MERGED_LOOKUP_COLUMNS: dict[str, str] = {
    "status": "string",
    "reason": "string",
    "raw_digest": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "from_cache": "boolean",
}

# `lookup_triage`: one row per (observable, expensive provider) decision.
TRIAGE_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "provider": "string",
    "selected": "bool",
    "priority": "float64",
    "reason": "string",
}

# `threat_context`: one row per observable with the threat entities it is linked to.
CONTEXT_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "normalized_value": "string",
    "links": "string",  # JSON list of links (entity, via, relationship, provider name)
    "n_threat_actors": "Int64",
    "n_intrusion_sets": "Int64",
    "n_campaigns": "Int64",
    "n_malware": "Int64",
    "linked": "boolean",
    "n_known_links": "Int64",  # distinct entities linked directly or through an indicator
    "link_summary": "string",  # "intrusion set Crimson Lynx; malware Emotet", for explanations
}

# `opencti_writeback`: one row per scored observable of the day, saying what the write-back did.
WRITEBACK_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "writeback_status": "string",  # WRITEBACK_STATUSES
    "reason": "string",  # held_back: no_provider_evidence; not_written: the observable's status
}
WRITEBACK_WRITTEN = "written"
WRITEBACK_DRY_RUN = "dry_run"  # in the dry-run bundle file, not sent
WRITEBACK_HELD_BACK = "held_back"  # every provider asked failed: nothing written for it
WRITEBACK_NOT_WRITTEN = "not_written"  # rejected, out of scope or no score
WRITEBACK_STATUSES = (WRITEBACK_WRITTEN, WRITEBACK_DRY_RUN, WRITEBACK_HELD_BACK,
                      WRITEBACK_NOT_WRITTEN)
WRITEBACK_NO_EVIDENCE = "no_provider_evidence"
