"""What an enrichment message asks for, or why we refuse it.

The helper hands our callback the platform's event after reading the entity back
(`enrichment_entity`); this module decides, without side effects, whether it becomes a request
for the pipeline (and which partition and refresh value) or a refusal with a message the analyst
reads on the work. The TLP note is informative only: the pipeline gates each provider itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cti_assets.intake.observable import decide_tlp, tlp_allows
from cti_assets.providers.base import ALL_PROVIDERS
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.settings import partitions_start
from cti_assets.sources.opencti import platform_markings

NETWORK_CONTEXT = "network_context"


class RequestRefusedError(ValueError):
    """The request gets no run; the message says why (it becomes the work's error)."""


@dataclass(frozen=True)
class EnrichmentRequest:
    """One accepted request: one OpenCTI work, one observable, one partition."""

    work_id: str
    entity_id: str  # the observable's standard id: what refresh_values matches
    entity_type: str
    value: str
    partition: str
    applicant_id: str
    notice: str = ""  # e.g. the TLP note, repeated in the final work message


def partition_of(created_at: str) -> str:
    """The daily partition (UTC date) of the observable's creation in OpenCTI."""
    from datetime import UTC

    moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def tlp_of(entity: dict) -> str:
    """The entity's TLP as the pipeline decides it (intake's decide_tlp: the most restrictive
    of its TLP markings, the unmarked policy without one, RED for one that resolves to
    nothing), so the note tells what the pipeline will do."""
    return decide_tlp(platform_markings(entity)).tlp


def tlp_notice(tlp: str, entity_type: str) -> str:
    """Which of the providers that look up this type the pipeline will not send the
    observable to, and why."""
    blocked = []
    for provider in ALL_PROVIDERS:
        if provider == NETWORK_CONTEXT or entity_type not in PROVIDER_SCOPE[provider]:
            continue
        max_tlp = settings_from_env(provider).max_tlp
        if not tlp_allows(tlp, max_tlp):
            blocked.append(f"{provider} (max {max_tlp})")
    if not blocked:
        return ""
    return (f"marked {tlp}, above the max TLP of {', '.join(blocked)}: "
            "the pipeline does not send it to those providers")


def parse_request(event: dict, *, work_id: str | None, applicant_id: str | None,
                  scope_ok, playbook: bool) -> EnrichmentRequest:
    """The request in a helper-prepared event, or RequestRefusedError with the analyst's message."""
    if not work_id:
        raise RequestRefusedError("no work id in the message: nothing to report on, ignored")
    if playbook:
        raise RequestRefusedError(
            "playbook enrichment refused: cti-assets enriches through its Dagster pipeline and "
            "writes back itself, asynchronously; it cannot return the bundle to a playbook step. "
            "Use the Enrich button (or automatic enrichment) instead."
        )
    entity = event.get("enrichment_entity") or {}
    entity_type = entity.get("entity_type") or event.get("entity_type") or ""
    if not scope_ok(entity_type):
        raise RequestRefusedError(
            f"{entity_type or 'unknown type'} is outside this connector's scope: no run launched"
        )
    standard_id = entity.get("standard_id") or event.get("entity_id")
    value = entity.get("observable_value") or entity.get("value")
    created_at = entity.get("created_at")
    if not standard_id or not value or not created_at:
        raise RequestRefusedError(
            "the entity read back from OpenCTI has no standard id, value or creation date: "
            "no run launched"
        )
    try:
        partition = partition_of(created_at)
    except ValueError:
        raise RequestRefusedError(
            f"unreadable creation date {created_at!r}: no run launched") from None
    first_day = partitions_start()
    if partition < first_day:
        raise RequestRefusedError(
            f"created on {partition}, before the pipeline's first partition {first_day} "
            "(CTI_PARTITIONS_START): no run launched")
    return EnrichmentRequest(
        work_id=work_id,
        entity_id=standard_id,
        entity_type=entity_type,
        value=value,
        partition=partition,
        applicant_id=applicant_id or "",
        notice=tlp_notice(tlp_of(entity), entity_type),
    )
