"""The source interface: what the pipeline needs from wherever observables live.

Two implementations satisfy it: the embedded SQLite STIX store (`sources.local`, the default)
and OpenCTI through pycti (`sources.opencti`). Assets only ever talk to this interface, so the
whole pipeline runs the same on either.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from cti_assets.intake.observable import TLP_BY_MARKING_ID, MarkingRef

# Entity types in scope, spelled as OpenCTI spells them.
OBSERVABLE_TYPES: tuple[str, ...] = (
    "IPv4-Addr",
    "IPv6-Addr",
    "Domain-Name",
    "Hostname",
    "Url",
    "StixFile",
)

# Custom property a write-back bundle may put on an observable: labels to take off it after the
# upsert (upserts only ever add labels). A source pops it before storing the object.
REMOVE_LABELS = "x_cti_assets_remove_labels"

# Threat entities an observable can be correlated with, as STIX types.
THREAT_ENTITY_TYPES: tuple[str, ...] = ("threat-actor", "intrusion-set", "campaign", "malware")


class SourceError(RuntimeError):
    """The source cannot be reached or refuses us; the message is meant for a person."""


@dataclass(frozen=True)
class ObservableRecord:
    """One observable as the source holds it, before normalisation.

    `value` is the raw value (for StixFile: the strongest hash present, SHA-256 > SHA-1 > MD5,
    with `hashes` carrying all of them). `markings` are its marking references with what the
    source could read of each definition; the TLP is decided from them in one place
    (observable.decide_tlp), never by the source.
    """

    internal_id: str
    stix_id: str
    entity_type: str
    value: str
    created_at: datetime
    markings: tuple[MarkingRef, ...] = ()
    labels: tuple[str, ...] = ()
    score: int | None = None
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def marking_ids(self) -> tuple[str, ...]:
        """STIX ids of every marking (TLP, PAP, statements, unresolved ones)."""
        return tuple(marking.id for marking in self.markings)

    @property
    def marking_definitions(self) -> tuple[str, ...]:
        """Readable names of the markings that have one ("TLP:AMBER", "PAP:RED")."""
        names = (m.definition or TLP_BY_MARKING_ID.get(m.id) for m in self.markings)
        return tuple(name for name in names if name is not None)


@dataclass(frozen=True)
class ThreatEntity:
    """A threat actor, intrusion set, campaign or malware known to the source."""

    stix_id: str
    entity_type: str  # one of THREAT_ENTITY_TYPES
    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ThreatLink:
    """An observable's link to a threat entity, and the path that makes it."""

    observable_stix_id: str
    entity: ThreatEntity
    via: str  # "direct" or "indicator"
    relationship_type: str  # e.g. "related-to", "indicates", "attributed-to"
    indicator_stix_id: str | None = None


@dataclass
class WriteStats:
    """What a bundle write did, per object: created, updated (already there), failed."""

    created: int = 0
    updated: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


@runtime_checkable
class Source(Protocol):
    """Where observables come from and where enrichment goes back."""

    name: str

    def check(self) -> None:
        """Raise SourceError with one clear message when the source is unusable."""

    def observables_created_between(self, start: datetime, end: datetime) -> list[ObservableRecord]:
        """Observables whose creation time lies in the half-open window [start, end), UTC,
        ordered by (created_at, stix_id), every page read."""

    def created_since(
        self, after: datetime | None, after_id: str | None, limit: int
    ) -> list[tuple[datetime, str]]:
        """Cheap watermark query for the sensor: (created_at, stix_id) of observables created
        strictly after (after, after_id) in (created_at, stix_id) order, at most `limit`."""

    def copies_of(
        self, keys: Iterable[tuple[str, str]], known: Collection[str] = ()
    ) -> dict[tuple[str, str], list[ObservableRecord]]:
        """For each identity key (intake.observables.identity_keys), the observables of the
        source holding that value, whatever their id or creation day, but those whose ids are
        `known` (the caller has them already) and at least one per set of markings: a value's
        TLP is the most restrictive among all of them. A source that keeps one observable per
        value (OpenCTI) may return none."""

    def current_scores(self, stix_ids: Iterable[str]) -> dict[str, int]:
        """The score each of these observables holds now (those with one), read just before a
        write-back so the score policy decides against what an analyst or another writer set
        since the observables were read."""

    def threat_entities(self) -> list[ThreatEntity]:
        """Every threat actor, intrusion set, campaign and malware, for name/alias matching."""

    def threat_context(
        self, observable_stix_ids: list[str], internal_ids: Mapping[str, str] | None = None
    ) -> list[ThreatLink]:
        """Links of the given observables to threat entities: directly, or through an
        indicator that is based on the observable and indicates / is attributed to them.
        `internal_ids` maps stix id -> the source's internal id, as read with the observables
        (OpenCTI's relationship filters match internal ids only)."""

    def write_bundle(self, bundle: dict) -> WriteStats:
        """Upsert a STIX 2.1 bundle; idempotent on STIX id."""
