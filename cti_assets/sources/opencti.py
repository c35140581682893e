"""The Source interface on a real OpenCTI platform, through pycti's `OpenCTIApiClient`.

pycti has no retries, wraps HTTP failures in bare ValueErrors, and its bundle importer
swallows failed sub-requests (a 5xx while adding a label or an external reference is logged
and the object still counts as imported). This module adds what a scheduled pipeline needs:
retries with backoff on connection errors and 5xx (tenacity), a transport that records every
request's outcome so a swallowed failure fails its object, honest created/updated/failed
counts, and one readable SourceError (no traceback, never the token) when the platform is
unreachable or refuses us.

Write-back is concurrent: a bounded pool of workers (CTI_WRITEBACK_WORKERS, settings), each
with its own pycti client and recording transport, imports the bundle in dependency phases (an
object only after every object of the bundle it refers to), so a day of tens of thousands of
objects is not one round trip after another. Outcomes are gathered per object by the caller,
so the counts stay exact whatever the interleaving.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from cti_assets import settings
from cti_assets.intake.observable import MarkingRef
from cti_assets.sources.base import (
    OBSERVABLE_TYPES,
    REMOVE_LABELS,
    ObservableRecord,
    SourceError,
    ThreatEntity,
    ThreatLink,
    WriteStats,
)

T = TypeVar("T")

# OpenCTI entity types of the threat entities, and the STIX type each maps to.
THREAT_TYPES: dict[str, str] = {
    "Threat-Actor-Group": "threat-actor",
    "Threat-Actor-Individual": "threat-actor",
    "Intrusion-Set": "intrusion-set",
    "Campaign": "campaign",
    "Malware": "malware",
}
_HASH_PREFERENCE = ("SHA-256", "SHA-1", "MD5")
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
_TRANSIENT_GRAPHQL = ("LOCK_ERROR", "Request timed out", "Bad Gateway")
_AUTH_ERRORS = ("AUTH_REQUIRED", "FORBIDDEN_ACCESS", "AUTH_FAILURE")
_PYCTI_LOGGERS = ("api", "admin", "worker")
_CHUNK = 100

_THREAT_FRAGMENTS = "\n".join(
    f"... on {graphql_type} {{ name aliases }}"
    for graphql_type in ("ThreatActorGroup", "ThreatActorIndividual", "IntrusionSet",
                         "Campaign", "Malware")
)
_OBSERVABLE_FIELDS = """
    id standard_id entity_type created_at observable_value x_opencti_score
    objectLabel { id value }
    objectMarking { id standard_id definition_type definition }
    ... on StixFile { hashes { algorithm hash } }
"""
_WATERMARK_FIELDS = "id standard_id created_at"
_LABEL_FIELDS = "objectLabel { id value }"
_SCORE_FIELDS = "... on StixCyberObservable { x_opencti_score }"
_THREAT_FIELDS = f"id standard_id entity_type\n{_THREAT_FRAGMENTS}"
_END_FIELDS = f"... on BasicObject {{ id standard_id entity_type }}\n{_THREAT_FRAGMENTS}"
_RELATIONSHIP_FIELDS = f"""
    id standard_id relationship_type
    from {{ {_END_FIELDS} }}
    to {{ {_END_FIELDS} }}
"""
_EXISTING_QUERY = """
    query CtiAssetsExisting($filters: FilterGroup, $first: Int) {
      %s(filters: $filters, first: $first) {
        edges { node { id standard_id x_opencti_stix_ids %s } }
      }
    }
"""
_ME_QUERY = "query CtiAssetsMe { me { id name capabilities { name } } }"
_ABOUT_QUERY = "query CtiAssetsAbout { about { version } }"
# Capabilities that let a user create and update knowledge (BYPASS: an administrator).
_WRITE_CAPABILITIES = {"BYPASS", "KNOWLEDGE_KNUPDATE"}
# pycti's client configures logging when it is built: one built at a time (see _client).
_CLIENT_BUILD_LOCK = threading.Lock()


class _SwallowedError(Exception):
    """A request pycti swallowed, or an object it silently did not import."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class _RecordingAdapter(HTTPAdapter):
    """Transport that remembers each response's status and GraphQL errors."""

    def __init__(self) -> None:
        super().__init__()
        self.last_status: int | None = None
        self.problems: list[tuple[str, bool]] = []  # (what, transient)

    # types-requests spells out send's keywords; this passes them all through unchanged.
    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.last_status = None
        try:
            response = super().send(request, **kwargs)
        except requests.RequestException as error:
            self.problems.append((f"connection failed ({type(error).__name__})", True))
            raise
        self.last_status = response.status_code
        if response.status_code != 200:
            self.problems.append((f"HTTP {response.status_code}",
                                  response.status_code in _TRANSIENT_STATUS))
            return response
        if b'"errors"' not in response.content and response.content.lstrip()[:1] == b"{":
            return response  # a JSON object without errors: pycti parses it (once)
        try:
            body = response.json()
        except ValueError:
            self.problems.append(("a response that is not JSON", False))
            return response
        if isinstance(body, dict) and body.get("errors"):
            first = body["errors"][0] if isinstance(body["errors"], list) else {}
            name = str(first.get("name") or (first.get("extensions") or {}).get("code") or "")
            self.problems.append((f"GraphQL error {name}".strip(),
                                  any(t in name for t in _TRANSIENT_GRAPHQL)))
        return response


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def platform_markings(node: Mapping[str, Any]) -> tuple[MarkingRef, ...]:
    """The markings of an entity as the platform returns them (`objectMarking`), by id; the
    enrichment connector reads an entity's TLP with them too."""
    return tuple(sorted(
        (MarkingRef(str(m.get("standard_id") or m.get("id") or ""), m.get("definition_type"),
                    m.get("definition"))
         for m in node.get("objectMarking") or []
         if m.get("standard_id") or m.get("id") or m.get("definition_type")),
        key=lambda ref: ref.id))


def _parse_time(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _filters(*filters: dict) -> dict:
    return {"mode": "and", "filters": list(filters), "filterGroups": []}


def _chunks(items: list[str], size: int = _CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# The one retry layer of OpenCTI calls: attempts per call on transient failures (connection,
# timeout, 5xx, GraphQL errors the platform marks as transient), with exponential backoff.
OPENCTI_MAX_ATTEMPTS = 4


class OpenCTISource:
    """Observables from OpenCTI, and enrichment written back to it, through pycti."""

    name = "opencti"

    def __init__(
        self,
        url: str,
        token: str,
        ssl_verify: bool = True,
        timeout_s: float = 30,
        page_size: int = 500,
        *,
        max_attempts: int = OPENCTI_MAX_ATTEMPTS,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        workers: int | None = None,
    ) -> None:
        """`workers`: concurrent write-back requests (None: settings.writeback_workers())."""
        if not url or not urlsplit(url).scheme.startswith("http"):
            raise SourceError("OPENCTI_URL must be an http(s) URL, e.g. http://localhost:8080")
        if not token or token == "ChangeMe":  # noqa: S105 - pycti's placeholder value
            raise SourceError("OPENCTI_TOKEN is empty or still 'ChangeMe'")
        workers = settings.writeback_workers() if workers is None else workers
        if page_size < 1 or max_attempts < 1 or workers < 1:
            raise SourceError("page_size, max_attempts and workers must be at least 1")
        self.url = url.rstrip("/")
        self._token = token
        self._ssl_verify = ssl_verify
        self._timeout_s = timeout_s
        self._page_size = page_size
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._workers = workers
        # One pycti client and transport per thread: pycti's clients keep per-call state
        # (mapping cache, session), and the transport records the calling thread's requests.
        self._local = threading.local()
        self._writable = False

    def __repr__(self) -> str:
        return f"OpenCTISource(url={redact_url(self.url)!r})"

    # --- client and error handling ---------------------------------------------------------
    @property
    def _transport(self) -> _RecordingAdapter:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = _RecordingAdapter()
        return transport

    def _client(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is not None:
            return api
        with _CLIENT_BUILD_LOCK:
            from pycti import OpenCTIApiClient

            root = logging.getLogger()
            guard = logging.NullHandler() if not root.handlers else None
            if guard:  # pycti calls logging.basicConfig(); keep it from configuring the root
                root.addHandler(guard)
            try:
                api = OpenCTIApiClient(
                    self.url,
                    self._token,
                    log_level="error",
                    ssl_verify=self._ssl_verify,
                    perform_health_check=False,
                    requests_timeout=self._timeout_s,
                    bundle_send_to_queue=False,
                )
            except ValueError as error:
                raise SourceError(f"cannot configure the OpenCTI client: {error}") from None
            finally:
                if guard:
                    root.removeHandler(guard)
            for logger_name in _PYCTI_LOGGERS:  # we report every failure ourselves
                logging.getLogger(logger_name).setLevel(logging.CRITICAL)
            api.session.mount("http://", self._transport)
            api.session.mount("https://", self._transport)
            self._local.api = api
        return api

    def _is_transient(self, error: BaseException) -> bool:
        if isinstance(error, _SwallowedError):
            return error.transient
        if isinstance(error, requests.exceptions.SSLError):
            return False
        if isinstance(error, requests.ConnectionError | requests.Timeout):
            return True
        if isinstance(error, ValueError):
            if self._transport.last_status in _TRANSIENT_STATUS:
                return True
            return any(marker in str(error) for marker in _TRANSIENT_GRAPHQL)
        return False

    def _call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one pycti call, retried on transient failures; SourceError when it gives up."""
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential(multiplier=self._backoff_s, max=self._backoff_max_s),
            retry=retry_if_exception(self._is_transient),
            reraise=True,
        )
        try:
            return retrying(function, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
            raise SourceError(self._describe(what, error)) from None

    def _describe(self, what: str, error: BaseException) -> str:
        where = redact_url(self.url)
        attempts = f" after {self._max_attempts} attempts" if self._is_transient(error) else ""
        if isinstance(error, requests.exceptions.SSLError):
            reason = re.search(r"\[SSL: ([A-Z_]+)\]", str(error))
            return (f"TLS with OpenCTI at {where} failed"
                    f" ({reason.group(1) if reason else 'handshake error'}): check the URL's "
                    "scheme, trust the platform's CA certificate, or set OPENCTI_SSL_VERIFY=false"
                    " for a test platform")
        if isinstance(error, requests.Timeout):
            return f"OpenCTI at {where} did not answer {what} within {self._timeout_s:g} s" \
                   f"{attempts}"
        if isinstance(error, requests.ConnectionError):
            return f"OpenCTI at {where} is unreachable ({what}{attempts}): check OPENCTI_URL"
        text = str(error.args[0] if error.args else error)
        if isinstance(error, ValueError) and error.args and isinstance(error.args[0], dict):
            detail = error.args[0]
            text = f"{detail.get('name')}: {detail.get('error_message')}"
        text = text.replace(self._token, "***")[:300]
        status = self._transport.last_status
        if any(code in text for code in _AUTH_ERRORS) or status in (401, 403):
            return f"OpenCTI at {where} refused the token ({text}): check OPENCTI_TOKEN"
        if status == 404:
            return f"no OpenCTI GraphQL API at {where}/graphql (HTTP 404): check OPENCTI_URL"
        if status is not None and status != 200:
            return f"OpenCTI at {where} answered HTTP {status} to {what}{attempts}"
        return f"OpenCTI rejected {what}: {text}"

    def _pages(self, what: str, list_function: Callable[..., dict], **kwargs: Any
               ) -> Iterator[dict]:
        """Every entity of a pycti listing, one retried request per page."""
        after = None
        first = kwargs.pop("first", self._page_size)
        while True:
            page = self._call(what, list_function, first=first, after=after,
                              withPagination=True, **kwargs)
            yield from page["entities"]
            info = page.get("pagination") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            after = info["endCursor"]

    # --- Source protocol -------------------------------------------------------------------
    def check(self) -> None:
        """The token is accepted and the platform runs the version pycti was built for."""
        self._me()
        self._check_version()

    def _me(self) -> dict:
        api = self._client()
        result = self._call("the identity check", api.query, _ME_QUERY)
        me = (result.get("data") or {}).get("me")
        if not me:
            raise SourceError(f"OpenCTI at {redact_url(self.url)} did not say who we are: "
                              "check OPENCTI_TOKEN")
        return me

    def _check_version(self) -> None:
        """pycti sends its own version's input fields (e.g. customFieldValues), which another
        platform version's schema may reject: the two must be the same version."""
        from pycti import __version__ as pycti_version

        api = self._client()
        result = self._call("the version check", api.query, _ABOUT_QUERY)
        platform = ((result.get("data") or {}).get("about") or {}).get("version")
        if platform != pycti_version:
            raise SourceError(
                f"OpenCTI at {redact_url(self.url)} runs version {platform} but pycti is "
                f"{pycti_version}: they must match; pin pycti=={platform} (or upgrade the "
                "platform)")

    def _check_writable(self) -> None:
        """Once per source, before the first write: same version, and a user that may write."""
        if self._writable:
            return
        me = self._me()
        self._check_version()
        capabilities = {str(c.get("name")) for c in me.get("capabilities") or []}
        if not capabilities & _WRITE_CAPABILITIES:
            raise SourceError(
                f"the OpenCTI user {me.get('name')!r} behind OPENCTI_TOKEN may not write "
                "knowledge (it needs the KNOWLEDGE_KNUPDATE capability): nothing was written")
        self._writable = True

    def observables_created_between(self, start: datetime, end: datetime) -> list[ObservableRecord]:
        if _utc(start) >= _utc(end):
            raise SourceError(f"empty window: start {_iso(start)} is not before end {_iso(end)}")
        api = self._client()
        nodes = self._pages(
            "the observable listing",
            api.stix_cyber_observable.list,
            filters=_filters(
                {"key": "created_at", "values": [_iso(start)], "operator": "gte", "mode": "or"},
                {"key": "created_at", "values": [_iso(end)], "operator": "lt", "mode": "or"},
                {"key": "entity_type", "values": list(OBSERVABLE_TYPES), "operator": "eq",
                 "mode": "or"},
            ),
            orderBy="created_at",
            orderMode="asc",
            customAttributes=_OBSERVABLE_FIELDS,
        )
        records = [_observable_record(node) for node in nodes]
        return sorted(records, key=lambda r: (r.created_at, r.stix_id))

    def created_since(
        self, after: datetime | None, after_id: str | None, limit: int
    ) -> list[tuple[datetime, str]]:
        if limit < 1:
            return []
        api = self._client()
        clauses = [{"key": "entity_type", "values": list(OBSERVABLE_TYPES), "operator": "eq",
                    "mode": "or"}]
        if after is not None:
            clauses.append({"key": "created_at", "values": [_iso(after)], "operator": "gte",
                            "mode": "or"})
        boundary = (_utc(after), after_id or "") if after is not None else None
        found: list[tuple[datetime, str]] = []
        pages = self._pages("the watermark query", api.stix_cyber_observable.list,
                            first=limit, filters=_filters(*clauses), orderBy="created_at",
                            orderMode="asc", customAttributes=_WATERMARK_FIELDS)
        for node in pages:
            key = (_parse_time(node["created_at"]), node["standard_id"])
            if boundary is None or key > boundary:
                found.append(key)
            # Stop once `limit` are found and the tie group at the cut-off is complete.
            if len(found) > limit and key[0] > sorted(found)[limit - 1][0]:
                break
        return sorted(found)[:limit]

    def copies_of(
        self, keys: Iterable[tuple[str, str]], known: Collection[str] = ()
    ) -> dict[tuple[str, str], list[ObservableRecord]]:
        """None: the platform keeps one observable per type and value (its standard id is
        built from the value's keys, pycti.md section 9), so a second import of a value is
        merged into the first and the markings the platform keeps on it are the value's. Not
        covered across days: one name held both as a Hostname and as a Domain-Name, or written
        differently (a domain's case, an IPv6 address's long form), and a file known under
        different hashes. The observables table groups such copies within a day."""
        return {}

    def current_scores(self, stix_ids: Iterable[str]) -> dict[str, int]:
        api = self._client()
        wanted = set(stix_ids)
        scores: dict[str, int] = {}
        for chunk in _chunks(sorted(wanted)):
            result = self._call(
                "the current score lookup", api.query,
                _EXISTING_QUERY % ("stixCoreObjects", _SCORE_FIELDS),
                {"filters": _filters({"key": "ids", "values": chunk}), "first": len(chunk)},
            )
            for edge in ((result.get("data") or {}).get("stixCoreObjects") or {}).get("edges") \
                    or []:
                node = edge["node"]
                if not isinstance(node.get("x_opencti_score"), int):
                    continue
                for alias in [node.get("standard_id"), *(node.get("x_opencti_stix_ids") or [])]:
                    if alias in wanted:
                        scores[alias] = node["x_opencti_score"]
        return scores

    def threat_entities(self) -> list[ThreatEntity]:
        api = self._client()
        nodes = self._pages("the threat entity listing", api.stix_domain_object.list,
                            types=list(THREAT_TYPES), customAttributes=_THREAT_FIELDS)
        entities = [_threat_entity(node) for node in nodes]
        return sorted((e for e in entities if e is not None), key=lambda e: e.stix_id)

    def threat_context(
        self, observable_stix_ids: list[str], internal_ids: Mapping[str, str] | None = None
    ) -> list[ThreatLink]:
        """Relationship filters (`fromOrToId`, `fromId`, `toId`) match the platform's internal
        ids only, so each standard id is first mapped to its internal id: from `internal_ids`
        (kept from the observable read), else looked up."""
        api = self._client()
        known = dict(internal_ids or {})
        wanted = sorted(set(observable_stix_ids))
        internal = self._internal_ids([i for i in wanted if not known.get(i)])
        internal.update({i: known[i] for i in wanted if known.get(i)})
        stix_of = {internal_id: stix_id for stix_id, internal_id in internal.items()}
        links: set[ThreatLink] = set()
        threat_types = list(THREAT_TYPES)
        for chunk in _chunks(sorted(stix_of)):
            members = set(chunk)
            for rel in self._pages("the relationship listing", api.stix_core_relationship.list,
                                   fromOrToId=chunk, elementWithTargetTypes=threat_types,
                                   customAttributes=_RELATIONSHIP_FIELDS):
                source, target = rel.get("from") or {}, rel.get("to") or {}
                if source.get("id") in members:
                    observable, other = source, target
                elif target.get("id") in members:
                    observable, other = target, source
                else:
                    continue
                entity = _threat_entity(other)
                if entity is not None:
                    links.add(ThreatLink(stix_of[observable["id"]], entity, "direct",
                                         rel["relationship_type"]))
            based_on: dict[str, list[tuple[str, str]]] = {}
            for rel in self._pages("the indicator listing", api.stix_core_relationship.list,
                                   toId=chunk, relationship_type=["based-on"],
                                   fromTypes=["Indicator"],
                                   customAttributes=_RELATIONSHIP_FIELDS):
                indicator, observable = rel.get("from") or {}, rel.get("to") or {}
                if observable.get("id") in members and indicator.get("id"):
                    based_on.setdefault(indicator["id"], []).append(
                        (indicator["standard_id"], stix_of[observable["id"]])
                    )
            for indicator_chunk in _chunks(sorted(based_on)):
                for rel in self._pages("the indicator relationship listing",
                                       api.stix_core_relationship.list, fromId=indicator_chunk,
                                       relationship_type=["indicates", "attributed-to"],
                                       toTypes=threat_types,
                                       customAttributes=_RELATIONSHIP_FIELDS):
                    entity = _threat_entity(rel.get("to") or {})
                    for indicator_id, observable_id in based_on.get(rel["from"]["id"], []):
                        if entity is not None:
                            links.add(ThreatLink(observable_id, entity, "indicator",
                                                 rel["relationship_type"], indicator_id))
        return sorted(links, key=lambda link: (link.observable_stix_id, link.entity.stix_id,
                                               link.via, link.relationship_type,
                                               link.indicator_stix_id or ""))

    def _internal_ids(self, stix_ids: list[str]) -> dict[str, str]:
        """Internal id of each of these standard (or extra stix) ids the platform holds."""
        api = self._client()
        found: dict[str, str] = {}
        wanted = set(stix_ids)
        for chunk in _chunks(sorted(wanted)):
            result = self._call(
                "the internal id lookup", api.query, _EXISTING_QUERY % ("stixCoreObjects", ""),
                {"filters": _filters({"key": "ids", "values": chunk}), "first": len(chunk)},
            )
            for edge in ((result.get("data") or {}).get("stixCoreObjects") or {}).get("edges") \
                    or []:
                node = edge["node"]
                for alias in [node.get("standard_id"), *(node.get("x_opencti_stix_ids") or [])]:
                    if alias in wanted:
                        found[alias] = node["id"]
        return found

    def write_bundle(self, bundle: dict) -> WriteStats:
        """Import the bundle object by object (pycti's GraphQL importer, `update=True`), with
        `workers` objects in flight at once, phase after phase (`_phases`): an object whose
        reference in the bundle failed is not attempted and counts as failed.

        Not `api.stix2.import_bundle`: it retries connection errors for minutes and reports
        objects whose import failed as imported. Objects already present count as updated.
        """
        if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
            raise SourceError("write_bundle expects a STIX bundle (type 'bundle')")
        objects = bundle.get("objects")
        if not isinstance(objects, list):
            raise SourceError("write_bundle: the bundle has no 'objects' list")
        stats = WriteStats()
        valid = []
        removals: dict[str, list[str]] = {}
        for index, obj in enumerate(objects):
            if isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj.get("type"):
                obj = dict(obj)
                removals[obj["id"]] = [str(v) for v in obj.pop(REMOVE_LABELS, None) or []]
                valid.append(obj)
            else:
                stats.failed += 1
                stats.failures.append(f"object {index}: not a STIX object with type and id")
        if not valid:
            return stats
        self._check_writable()
        from pycti.utils.opencti_stix2_splitter import OpenCTIStix2Splitter

        _, incompatible, parts = OpenCTIStix2Splitter().split_bundle_with_expectations(
            {"type": "bundle", "id": bundle.get("id"), "objects": copy.deepcopy(valid)}, False
        )
        failed: set[str] = set()
        for item in incompatible:
            stats.failed += 1
            stats.failures.append(f"{item.get('id')}: refused by pycti's bundle splitter")
            failed.add(str(item.get("id")))
        items = [item for part in parts for item in part["objects"]]
        aborted = threading.Event()  # set when every problem of a failure was transient
        with ThreadPoolExecutor(self._workers, thread_name_prefix="opencti-write") as pool:
            existing = self._existing([obj["id"] for obj in valid], pool)
            for phase in _phases(items):
                blocked = [_failed_reference(item, failed) for item in phase]
                stale = [_stale_labels(existing.get(item["id"]), removals.get(item["id"]))
                         for item in phase]
                outcomes = list(pool.map(
                    lambda job: self._write_one(job[0], job[1], job[2], aborted),
                    zip(phase, stale, blocked, strict=True)))
                for item, problem in zip(phase, outcomes, strict=True):
                    if problem is not None:
                        stats.failed += 1
                        stats.failures.append(f"{item['id']}: {problem}")
                        failed.add(item["id"])
                    elif item["id"] in existing:
                        stats.updated += 1
                    else:
                        stats.created += 1
        return stats

    def _write_one(self, item: dict, stale: tuple[str, list[str]] | None,
                   blocked: str | None, aborted: threading.Event) -> str | None:
        """Import one object and take its stale labels off (`stale`: the node's internal id
        and the label ids); None, or why it failed."""
        if aborted.is_set():
            return "not attempted (the platform was failing)"
        if blocked is not None:
            return f"not attempted (it refers to {blocked}, which failed)"
        try:
            self._call(f"the import of {item['id']}", self._import_one, item)
            if stale is not None:
                self._call(f"the label removal on {item['id']}", self._remove_labels, *stale)
        except SourceError as error:
            if self._transport.problems and all(t for _, t in self._transport.problems):
                aborted.set()
            return str(error)
        return None

    def _import_one(self, item: dict) -> None:
        api = self._client()
        cache = getattr(api.stix2, "mapping_cache", None)
        cache_key = item["id"] + (api.get_draft_id() or "")
        if cache is not None:
            cache.pop(cache_key, None)
        self._transport.problems.clear()
        api.stix2.import_item(copy.deepcopy(item), update=True)
        if self._transport.problems:
            raise _SwallowedError("; ".join(what for what, _ in self._transport.problems),
                           all(transient for _, transient in self._transport.problems))
        if cache is not None and item["type"] != "marking-definition" and cache_key not in cache:
            raise _SwallowedError("pycti sent nothing for it (unsupported or incomplete)", False)

    def _remove_labels(self, node_id: str, label_ids: list[str]) -> None:
        """Take these labels off the observable (upserts only add labels)."""
        api = self._client()
        self._transport.problems.clear()
        for label_id in label_ids:
            api.stix_cyber_observable.remove_label(id=node_id, label_id=label_id)
        if self._transport.problems:
            raise _SwallowedError("; ".join(what for what, _ in self._transport.problems),
                                  all(transient for _, transient in self._transport.problems))

    def _existing(self, ids: list[str], pool: ThreadPoolExecutor) -> dict[str, dict]:
        """The node (internal id, labels) of each of these STIX ids the platform already holds
        (as standard or stix id); one query per chunk of ids, the chunks on the pool's workers.
        The labels are those before the write: an import only adds the current verdict label,
        so the stale ones it finds are all there are to take off, without reading again."""
        groups = {
            "stixCoreRelationships": [i for i in ids if i.startswith("relationship--")],
            "stixCoreObjects": [i for i in ids if not i.startswith("relationship--")],
        }
        queries = [(field, chunk) for field, group in groups.items()
                   for chunk in _chunks(sorted(set(group)))]

        wanted = set(ids)

        def existing(query: tuple[str, list[str]]) -> dict[str, dict]:
            field, chunk = query
            extra = _LABEL_FIELDS if field == "stixCoreObjects" else ""
            result = self._call(
                "the existence check", self._client().query, _EXISTING_QUERY % (field, extra),
                {"filters": _filters({"key": "ids", "values": chunk}), "first": len(chunk)},
            )
            found: dict[str, dict] = {}
            for edge in ((result.get("data") or {}).get(field) or {}).get("edges") or []:
                node = edge["node"]
                for alias in [node.get("standard_id"), *(node.get("x_opencti_stix_ids") or [])]:
                    if alias in wanted:
                        found[alias] = node
            return found

        return {alias: node for found in pool.map(existing, queries)
                for alias, node in found.items()}


def _references(item: dict) -> set[str]:
    """Every STIX id the object refers to (`*_ref` and `*_refs` properties)."""
    found: set[str] = set()
    for key, value in item.items():
        if key.endswith("_ref") and isinstance(value, str):
            found.add(value)
        elif key.endswith("_refs") and isinstance(value, list):
            found.update(ref for ref in value if isinstance(ref, str))
    return found


def _phases(items: list[dict]) -> list[list[dict]]:
    """The items in dependency phases: phase 0 refers to nothing else in the bundle, phase k
    to something of phase k-1 at most; the order within a phase is kept. A reference cycle
    (which STIX bundles do not have) is cut where it is found."""
    by_id = {item["id"]: item for item in items}
    depth: dict[str, int] = {}

    def depth_of(stix_id: str, seen: frozenset[str]) -> int:
        if stix_id not in depth:
            refs = [ref for ref in _references(by_id[stix_id])
                    if ref in by_id and ref != stix_id and ref not in seen]
            depth[stix_id] = 1 + max((depth_of(ref, seen | {stix_id}) for ref in refs),
                                     default=-1)
        return depth[stix_id]

    phases: list[list[dict]] = []
    for item in items:
        level = depth_of(item["id"], frozenset())
        phases.extend([] for _ in range(level + 1 - len(phases)))
        phases[level].append(item)
    return [phase for phase in phases if phase]


def _stale_labels(node: dict | None, unwanted: list[str] | None
                  ) -> tuple[str, list[str]] | None:
    """(internal id, label ids) of the unwanted labels an existing node carries, or None."""
    if node is None or not unwanted:
        return None
    values = set(unwanted)
    label_ids = [label["id"] for label in node.get("objectLabel") or []
                 if label.get("value") in values]
    return (node["id"], label_ids) if label_ids else None


def _failed_reference(item: dict, failed: set[str]) -> str | None:
    """One of the object's references that failed to import, if any."""
    return next(iter(sorted(_references(item) & failed)), None)


def _observable_record(node: dict) -> ObservableRecord:
    hashes: dict[str, str] = {}
    for entry in node.get("hashes") or []:
        if entry.get("algorithm") and entry.get("hash"):
            hashes[str(entry["algorithm"]).upper()] = str(entry["hash"])
    if node["entity_type"] == "StixFile":
        value = next((hashes[h] for h in _HASH_PREFERENCE if h in hashes), None)
        value = value or node.get("observable_value") or ""
    else:
        value = node.get("observable_value") or ""
    return ObservableRecord(
        internal_id=node["id"],
        stix_id=node["standard_id"],
        entity_type=node["entity_type"],
        value=str(value),
        created_at=_parse_time(node["created_at"]),
        markings=platform_markings(node),
        labels=tuple(sorted(label["value"] for label in node.get("objectLabel") or []
                            if label.get("value"))),
        score=node.get("x_opencti_score"),
        hashes=hashes,
    )


def _threat_entity(node: dict) -> ThreatEntity | None:
    stix_type = THREAT_TYPES.get(node.get("entity_type") or "")
    if stix_type is None or not node.get("standard_id") or not node.get("name"):
        return None
    return ThreatEntity(
        stix_id=node["standard_id"],
        entity_type=stix_type,
        name=node["name"],
        aliases=tuple(sorted(a for a in node.get("aliases") or [] if a)),
    )
