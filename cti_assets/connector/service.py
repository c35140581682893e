"""The connector process: pycti's helper in front, the ledger and the dispatcher behind.

The helper registers us (INTERNAL_ENRICHMENT), pings, verifies and delivers messages (AMQP by
default, or its HTTP API listen protocol), reads the entity back and reports the work around our
callback. The callback only decides and records: it returns at once, so the next message is
consumed while earlier ones wait in the coalescing window. Because the helper marks the work
processed when the callback returns, the callback first adds one expectation to the work: the
platform completes a work only once its expectations are reported, which the dispatcher does
when the run has ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cti_assets.connector.config import ConnectorSettings
from cti_assets.connector.dagster_api import DagsterApi
from cti_assets.connector.dispatcher import Dispatcher
from cti_assets.connector.ledger import Ledger
from cti_assets.connector.request import RequestRefusedError, parse_request
from cti_assets.state.urls import redact_url

log = logging.getLogger("cti_assets.connector")


def make_callback(helper: Any, ledger: Ledger, settings: ConnectorSettings
                  ) -> Callable[[dict], str]:
    """The helper's message callback: accept (durably) or refuse with the analyst's message."""

    def on_message(event: dict) -> str:
        try:
            request = parse_request(
                event, work_id=helper.work_id, applicant_id=helper.applicant_id,
                scope_ok=settings.in_scope, playbook=helper.playbook is not None)
        except RequestRefusedError as refusal:
            log.info("work %s refused: %s", helper.work_id, refusal)
            raise  # the helper reports it on the work, in error
        if not ledger.accept(request):
            return f"already accepted: {request.value} is queued or running"
        helper.api.work.add_expectations(request.work_id, 1)
        notice = f"; {request.notice}" if request.notice else ""
        log.info("work %s accepted: %s %s, partition %s", request.work_id,
                 request.entity_type, request.entity_id, request.partition)
        return (f"accepted: {request.value} queued for the enrichment run of partition "
                f"{request.partition} (requests within {settings.window_s:g}s share a run)"
                f"{notice}")

    return on_message


class ConnectorStartError(RuntimeError):
    """The connector cannot start (the platform refused or cannot be reached); one line."""


def run_connector(settings: ConnectorSettings) -> None:
    """Register, resume what a previous process left in the ledger, and listen until killed."""
    from pycti import OpenCTIApiClient, OpenCTIConnectorHelper

    from cti_assets.settings import data_dir

    ledger = Ledger(data_dir() / "connector.sqlite")
    pending = ledger.pending_count()
    if pending:
        log.info("resuming %d accepted request(s) from the ledger", pending)
    # pycti logs a failed health check with its traceback before raising: the line below says it
    api_log = logging.getLogger("api")
    was_disabled, api_log.disabled = api_log.disabled, True
    try:
        helper = OpenCTIConnectorHelper(settings.helper_config(), playbook_compatible=False)
    except ValueError as error:  # pycti says "Waiting for OpenCTI API to start", then gives up
        reason = str(error).split(". ")[0].rstrip(".")
        raise ConnectorStartError(
            f"cannot register with OpenCTI at {redact_url(settings.opencti_url)}: {reason}; "
            "check OPENCTI_URL and OPENCTI_TOKEN and that the platform is up") from None
    finally:
        api_log.disabled = was_disabled
    # the dispatcher reports from its own thread: its own client, no shared session
    reporter = OpenCTIApiClient(settings.opencti_url, settings.opencti_token,
                                settings.log_level, perform_health_check=False)
    dagster = DagsterApi(settings.dagster_url, public_url=settings.dagster_public_url)
    dispatcher = Dispatcher(ledger, dagster, reporter.work,
                            window_s=settings.window_s, poll_s=settings.poll_s,
                            max_backoff_s=settings.max_backoff_s).start()
    try:
        helper.listen(make_callback(helper, ledger, settings))
    finally:
        dispatcher.stop()
