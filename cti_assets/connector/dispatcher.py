"""Coalesce accepted requests into runs, launch them, and report each run's end on its works.

One background loop owns the life of a request after the callback accepted it: batches form per
partition once the oldest request waited the coalescing window, a batch's run is launched (or
found again after a crash, by its batch tag), its works are marked received with the run's URL,
and when the run ends each work gets one line (score, verdict, run URL, or the error class) and
its expectation is reported, which completes it. Dagster unreachable: the batch is kept and the
launch retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from cti_assets.connector.dagster_api import (
    BATCH_TAG,
    TERMINAL,
    USERS_TAG,
    WORKS_TAG,
    DagsterApi,
    DagsterUnavailableError,
    LaunchRefusedError,
    RunOutcome,
)
from cti_assets.connector.ledger import Batch, Ledger
from cti_assets.connector.request import EnrichmentRequest
from cti_assets.tables import OBSERVABLE_OK, WRITEBACK_NOT_ASKED

log = logging.getLogger("cti_assets.connector")


class Works(Protocol):
    """pycti's `api.work` (OpenCTIApiWork): the calls we make on a work."""

    def to_received(self, work_id: str, message: str) -> Any: ...
    def to_processed(self, work_id: str, message: str, in_error: bool = False) -> Any: ...
    def report_expectation(self, work_id: str, error: Any) -> Any: ...


def read_score(partition: str, entity_id: str) -> dict | None:
    """The observable's row in the partition's scores, or None."""
    from cti_assets.storage.outputs import read_partition

    try:
        scores = read_partition("observable_scores", partition)
    except (FileNotFoundError, OSError):
        return None
    rows = scores[scores["stix_id"] == entity_id]
    if rows.empty:
        return None
    row = rows.iloc[0].to_dict()
    try:
        written = read_partition("opencti_writeback", partition)
    except (FileNotFoundError, OSError):
        return row
    mine = written[written["stix_id"] == entity_id]
    if not mine.empty:
        row["writeback_status"] = mine.iloc[0]["writeback_status"]
        row["writeback_reason"] = mine.iloc[0]["reason"]
    return row


def summary(request: EnrichmentRequest, outcome: RunOutcome, run_url: str,
            row: dict | None) -> tuple[str, bool]:
    """The work's one line, and whether it is an error."""
    notice = f" ({request.notice})" if request.notice else ""
    if outcome.status != "SUCCESS":
        step = f" in {outcome.failed_step}" if outcome.failed_step else ""
        return (f"cti-assets run {outcome.status.lower()}: {outcome.error_class}{step} for "
                f"{request.value}; run {run_url}{notice}", True)
    if row is None:
        return (f"cti-assets run succeeded but scored no {request.value} in partition "
                f"{request.partition}; run {run_url}{notice}", True)
    status = row.get("observable_status")
    if isinstance(status, str) and status != OBSERVABLE_OK:  # rejected or out of scope
        return (f"cti-assets: {request.value} not enriched: {row.get('explanation')}; "
                f"run {run_url}{notice}", True)
    if row.get("writeback_reason") == WRITEBACK_NOT_ASKED:
        return (f"cti-assets: {request.value} was sent to no provider (TLP, keys or budget) "
                f"and nothing was written back: {row.get('explanation')}; run {run_url}"
                f"{notice}", False)
    score = row.get("score")
    score_text = "none" if score is None or score != score else f"{float(score):g}"
    return (f"cti-assets: {request.value} score {score_text}, verdict {row.get('verdict')}; "
            f"run {run_url}{notice}", False)


class Dispatcher:
    """The loop; `tick()` is one pass, callable directly in tests."""

    def __init__(self, ledger: Ledger, dagster: DagsterApi, works: Works, *,
                 window_s: float, poll_s: float = 0.5, max_backoff_s: float = 60.0,
                 score_of: Callable[[str, str], dict | None] = read_score) -> None:
        self.ledger = ledger
        self.dagster = dagster
        self.works = works
        self.window_s = window_s
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.score_of = score_of
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(target=self._loop, name="cti-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("dispatcher pass failed; retrying")
            self._stop.wait(self.poll_s)

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for batch in self.ledger.form_due_batches(self.window_s, now):
            log.info("batch %s formed for partition %s", batch.batch_id, batch.partition)
        for batch in self.ledger.open_batches():
            if batch.run_id is None:
                if batch.next_attempt_at <= now:
                    self._launch(batch, now)
            else:
                self._watch(batch)

    def _launch(self, batch: Batch, now: float) -> None:
        requests = self.ledger.requests_of(batch.batch_id)
        if not requests:
            return
        values = sorted({r.entity_id for r in requests})
        tags = {
            BATCH_TAG: batch.batch_id,
            WORKS_TAG: ",".join(r.work_id for r in requests),
            USERS_TAG: ",".join(sorted({r.applicant_id for r in requests if r.applicant_id})),
            "cti/trigger": "opencti-connector",
        }
        try:
            run_id = self.dagster.find_run(batch.batch_id) or self.dagster.launch(
                batch.partition, values, tags)
        except DagsterUnavailableError as error:
            delay = min(self.max_backoff_s, 2.0 ** batch.attempts)
            log.warning("launch for partition %s failed (%s); retry in %.0fs",
                        batch.partition, error, delay)
            self.ledger.postpone(batch.batch_id, now + delay)
            return
        except LaunchRefusedError as error:
            for request in requests:
                self._finish(request, f"cti-assets could not launch a run: {error}", True)
            return
        self.ledger.set_run(batch.batch_id, run_id)
        url = self.dagster.run_url(run_id)
        log.info("run %s launched for partition %s (%d request(s))", run_id, batch.partition,
                 len(requests))
        for request in requests:
            try:
                self.works.to_received(
                    request.work_id,
                    f"Dagster run launched for partition {batch.partition} "
                    f"({len(requests)} request(s) coalesced): {url}")
            except Exception as error:  # noqa: BLE001 - progress note only; the end matters
                log.warning("cannot mark work %s received: %s", request.work_id,
                            type(error).__name__)

    def _watch(self, batch: Batch) -> None:
        assert batch.run_id is not None
        try:
            outcome = self.dagster.outcome(batch.run_id)
        except DagsterUnavailableError as error:
            log.warning("cannot read run %s: %s", batch.run_id, error)
            return
        if outcome.status not in TERMINAL:
            return
        url = self.dagster.run_url(batch.run_id)
        for request in self.ledger.requests_of(batch.batch_id):
            row = self.score_of(request.partition, request.entity_id) \
                if outcome.status == "SUCCESS" else None
            message, in_error = summary(request, outcome, url, row)
            self._finish(request, message, in_error)

    def _finish(self, request: EnrichmentRequest, message: str, in_error: bool) -> None:
        """Report the end on the work; the request is forgotten only once that succeeded."""
        try:
            self.works.to_processed(request.work_id, message, in_error)
        except Exception as error:  # noqa: BLE001 - OpenCTI down: keep it, report next pass
            log.warning("cannot report work %s: %s", request.work_id, type(error).__name__)
            return
        self.works.report_expectation(
            request.work_id, {"error": message, "source": request.entity_id} if in_error else None)
        self.ledger.done(request.work_id)
        log.info("work %s reported: %s", request.work_id, message)
