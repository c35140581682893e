"""Column contracts of the tables that flow between assets.

Each asset output is a pandas DataFrame written as one Parquet file per partition. Keeping the
column lists here lets every module (and every test) agree on them without importing Dagster.
Each `*_COLUMNS` (name -> dtype) has a `*_DESCRIPTIONS` (name -> what the column holds): the
descriptions the asset pages show in their column schema (schemas.asset_descriptions).
"""

from __future__ import annotations

# `observables`: one row per observable created in the partition's window.
OBSERVABLE_COLUMNS: dict[str, str] = {
    "internal_id": "string",
    "stix_id": "string",
    "entity_type": "string",
    "value": "string",
    "normalized_value": "string",
    "hash_type": "string",
    "tlp": "string",
    "tlp_reason": "string",
    "marking_ids": "list",
    "labels": "list",
    "existing_score": "Int64",
    "created_at": "datetime64[ns, UTC]",
    "status": "string",
    "reason": "string",
}
OBSERVABLE_DESCRIPTIONS: dict[str, str] = {
    "internal_id": "OpenCTI internal id of the observable",
    "stix_id": "STIX id of the observable (the key every table joins on)",
    "entity_type": "OpenCTI entity type: IPv4-Addr, IPv6-Addr, Domain-Name, Hostname, Url, "
                   "StixFile",
    "value": "Raw value as the source holds it",
    "normalized_value": "Value after normalisation, the one providers are asked about; null "
                        "when rejected",
    "hash_type": "StixFile only: MD5, SHA-1 or SHA-256",
    "tlp": "Effective TLP: TLP:CLEAR ... TLP:RED",
    "tlp_reason": "Why that TLP: null when from its markings; \"unmarked\"; "
                  "\"tlp_unresolved: <ids>\"; \"stricter_copy: <stix id>\" when another "
                  "observable of the same value (another id or day) is marked higher",
    "marking_ids": "STIX ids of all its markings (TLP, PAP, statements)",
    "labels": "OpenCTI labels on the observable",
    "existing_score": "x_opencti_score already on the observable",
    "created_at": "When it was created in OpenCTI (puts it in a daily partition)",
    "status": "\"ok\", \"rejected\" (invalid value) or \"skipped\" (out-of-scope type)",
    "reason": "Why rejected or skipped; null when ok",
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
    "status": "string",
    "reason": "string",
    "fields": "string",
    "fetched_at": "datetime64[ns, UTC]",
    "raw_digest": "string",
    "from_cache": "boolean",
    "latency_ms": "Float64",
    "http_status": "Int64",
    "message": "string",
}
LOOKUP_DESCRIPTIONS: dict[str, str] = {
    "stix_id": "STIX id of the observable looked up",
    "entity_type": "OpenCTI entity type of the observable",
    "normalized_value": "The value the provider was asked about",
    "provider": "The provider asked",
    "status": "ok, not_found, skipped, deferred or error (providers.base.STATUSES)",
    "reason": "Skip reason, defer reason or error class",
    "fields": "JSON object of the provider's typed fields (providers/fields.py)",
    "fetched_at": "When the answer was fetched (from the provider or, earlier, into the cache)",
    "raw_digest": "Key of the raw response body in the response cache",
    "from_cache": "Answered from the response cache, no call made",
    "latency_ms": "Time the lookup took, in milliseconds",
    "http_status": "HTTP status of the provider's answer; null when no call was made",
    "message": "Provider or error message, for the operator",
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
    "score": "Int64",
    "confidence": "Int64",
    "verdict": "string",
    "components": "list",
    "explanation": "string",
    "special_use": "boolean",
    "linked": "boolean",
    "link_summary": "string",
    "provider_status": "string",
}
SCORE_DESCRIPTIONS: dict[str, str] = {
    "stix_id": "STIX id of the observable scored",
    "internal_id": "OpenCTI internal id of the observable",
    "entity_type": "OpenCTI entity type of the observable",
    "normalized_value": "The observable's normalised value",
    "observable_status": "Its intake status: ok, rejected or skipped",
    "tlp": "Its effective TLP",
    "existing_score": "x_opencti_score already on the observable",
    "score": "Our score, 0-100; null when rejected",
    "confidence": "How sure the score is, 0-100 (how much evidence, how much agreement)",
    "verdict": "malicious, suspicious, benign or unknown",
    "components": "Evidence items behind the score: rule, provider, field, value_json, "
                  "contribution",
    "explanation": "The score explained in one sentence, for analysts",
    "special_use": "A private, reserved or special-use address or name",
    "linked": "Linked to a known threat actor, intrusion set, campaign or malware",
    "link_summary": "The threat entities it is linked to, named",
    "provider_status": "JSON: provider -> status[:reason] of each lookup",
}
# What the score policy (scoring.policy) adds to each score row.
SCORE_POLICY_COLUMNS: dict[str, str] = {
    "final_score": "Int64",
    "policy_action": "string",
}
SCORE_POLICY_DESCRIPTIONS: dict[str, str] = {
    "final_score": "The score written back, after the score policy",
    "policy_action": "What the policy did with the existing score (scoring.policy.ACTIONS)",
}

# `merged_enrichment`: the observable's columns, then per provider these lookup columns (as
# `<provider>__<name>`) and its typed fields (providers.fields.PROVIDER_FIELDS).
# Their descriptions are LOOKUP_DESCRIPTIONS', under the provider's name (schemas.py).
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
TRIAGE_DESCRIPTIONS: dict[str, str] = {
    "stix_id": "STIX id of the observable",
    "provider": "The expensive provider the decision is about",
    "selected": "Whether the observable is looked up at that provider today",
    "priority": "How much the lookup is worth: uncertain or urgent scores rank first",
    "reason": "Why selected or not (scoring.triage)",
}

# `threat_context`: one row per observable with the threat entities it is linked to.
CONTEXT_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "normalized_value": "string",
    "links": "string",
    "n_threat_actors": "Int64",
    "n_intrusion_sets": "Int64",
    "n_campaigns": "Int64",
    "n_malware": "Int64",
    "linked": "boolean",
    "n_known_links": "Int64",
    "link_summary": "string",
}
CONTEXT_DESCRIPTIONS: dict[str, str] = {
    "stix_id": "STIX id of the observable",
    "normalized_value": "The observable's normalised value",
    "links": "JSON list of links (entity, via, relationship, provider name)",
    "n_threat_actors": "Threat actors it is linked to",
    "n_intrusion_sets": "Intrusion sets it is linked to",
    "n_campaigns": "Campaigns it is linked to",
    "n_malware": "Malware it is linked to",
    "linked": "Linked to at least one known threat entity",
    "n_known_links": "Distinct entities linked directly or through an indicator",
    "link_summary": "\"intrusion set Crimson Lynx; malware Emotet\", for explanations",
}

# `opencti_writeback`: one row per scored observable of the day, saying what the write-back did.
WRITEBACK_COLUMNS: dict[str, str] = {
    "stix_id": "string",
    "writeback_status": "string",
    "reason": "string",
}
WRITEBACK_DESCRIPTIONS: dict[str, str] = {
    "stix_id": "STIX id of the observable",
    "writeback_status": "written, dry_run, held_back or not_written",
    "reason": "held_back: no_provider_evidence; not_written: the observable's status, or "
              "no_provider_asked (no provider was asked and nothing else gave evidence)",
}
WRITEBACK_WRITTEN = "written"
WRITEBACK_DRY_RUN = "dry_run"  # in the dry-run bundle file, not sent
WRITEBACK_HELD_BACK = "held_back"  # every provider asked failed: nothing written for it
WRITEBACK_NOT_WRITTEN = "not_written"  # rejected, out of scope or no score
WRITEBACK_STATUSES = (WRITEBACK_WRITTEN, WRITEBACK_DRY_RUN, WRITEBACK_HELD_BACK,
                      WRITEBACK_NOT_WRITTEN)
WRITEBACK_NO_EVIDENCE = "no_provider_evidence"
WRITEBACK_NOT_ASKED = "no_provider_asked"  # TLP, keys or budget kept it from every provider
