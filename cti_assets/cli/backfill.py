"""Launch real asset backfills through the webserver's GraphQL (launchPartitionBackfill).

`dagster job backfill` ignores BackfillPolicy and `dagster asset materialize` bypasses the run
queue; a daemon-managed asset backfill does neither. Backfills carry a lower priority than
sensor runs, so fresh observables go first. Settings, dates and asset names are checked here
before anything is sent, and when the webserver refuses, its own reason is shown.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import requests

from cti_assets import settings
from cti_assets.cli.args import parse_day as parse_date
from cti_assets.cli.errors import quoted

LAUNCH_BACKFILL = """
mutation LaunchBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}
"""


class BackfillError(RuntimeError):
    """The webserver refused the backfill or could not be reached."""


def job_assets() -> dict[str, list[str]]:
    """Each job's selection (defs.automation owns them). Read when asked: the definitions are
    built from the settings, which launch_backfill checks first."""
    from cti_assets.defs.automation import RESCORE_ASSETS

    return {"rescore": list(RESCORE_ASSETS)}


def check_environment() -> None:
    """The settings, checked before anything is sent; BackfillError naming a bad one."""
    try:
        settings.check_environment()
    except settings.SettingsError as error:
        raise BackfillError(str(error)) from None


def parse_day(text: str, flag: str) -> date:
    """A YYYY-MM-DD day; BackfillError naming the flag otherwise."""
    try:
        return parse_date(text)
    except ValueError as error:
        raise BackfillError(f"{flag} {error}") from None


def day_keys(date_from: str, date_to: str) -> list[str]:
    """Inclusive list of daily partition keys; refused (not clipped) when the range reaches
    outside the partitions (before CTI_PARTITIONS_START or after today, UTC)."""
    first, last = parse_day(date_from, "--from"), parse_day(date_to, "--to")
    if last < first:
        raise BackfillError(f"--to {date_to} is before --from {date_from}")
    start = date.fromisoformat(settings.partitions_start())
    if first < start:
        raise BackfillError(
            f"--from {date_from} is before the first partition, {start} (CTI_PARTITIONS_START)"
        )
    today = datetime.now(UTC).date()
    if last > today:
        raise BackfillError(f"--to {date_to} is after today's partition, {today} (UTC)")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def known_assets() -> list[str]:
    from cti_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    return sorted(key.to_user_string() for key in graph.get_all_asset_keys())


def check_assets(names: list[str]) -> list[str]:
    """The names, each a known asset; BackfillError for an empty list or an unknown name."""
    if not names or not all(name.strip() for name in names):
        raise BackfillError("--assets needs one or more asset names")
    known = known_assets()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BackfillError(
            f"unknown asset(s): {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return names


def server_reason(response: requests.Response) -> str:
    """The reason the webserver gives in an error answer (GraphQL errors, else its text)."""
    from cti_assets.providers.http import redact

    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("errors"):
        errors = payload["errors"] if isinstance(payload["errors"], list) else [payload["errors"]]
        messages = [str(e.get("message", e) if isinstance(e, dict) else e) for e in errors]
        reason = "; ".join(messages)
    else:
        reason = response.text
    reason = " ".join(reason.split())[:300] or response.reason or "no reason given"
    return redact(reason)


def backfill_params(
    date_from: str, date_to: str, assets: list[str] | None = None, job: str | None = None
) -> dict:
    from cti_assets.defs.automation import BACKFILL_PRIORITY

    jobs = job_assets()
    if job and job not in jobs:
        raise BackfillError(f"unknown job {quoted(job)}; known: {', '.join(jobs)}")
    if assets is not None and job:
        raise BackfillError("give --assets or --job, not both")
    partitions = day_keys(date_from, date_to)
    if assets is not None:
        selected = check_assets(assets)
    else:
        selected = jobs[job] if job else known_assets()
    return {
        "assetSelection": [{"path": name.split("/")} for name in selected],
        "partitionNames": partitions,
        "fromFailure": False,
        "tags": [
            {"key": "dagster/priority", "value": BACKFILL_PRIORITY},
            {"key": "cti/trigger", "value": f"backfill:{job or 'assets'}"},
        ],
    }


def launch_backfill(
    date_from: str,
    date_to: str,
    *,
    assets: list[str] | None = None,
    url: str = "http://127.0.0.1:3000",
    job: str | None = None,
    timeout_s: float = 30.0,
) -> str:
    """Launch the backfill; return its id."""
    check_environment()
    params = backfill_params(date_from, date_to, assets, job)
    try:
        response = requests.post(
            f"{url.rstrip('/')}/graphql",
            json={"query": LAUNCH_BACKFILL, "variables": {"backfillParams": params}},
            timeout=timeout_s,
        )
    except requests.RequestException as error:
        raise BackfillError(
            f"cannot reach the Dagster webserver at {safe_url(url)}: {type(error).__name__} "
            "(is `make dev` running? --url sets where)"
        ) from None
    if response.status_code != 200:
        raise BackfillError(
            f"webserver answered HTTP {response.status_code}: {server_reason(response)}"
        )
    try:
        payload = response.json()
        if payload.get("errors"):
            raise BackfillError(f"webserver refused the backfill: {server_reason(response)}")
        result = payload["data"]["launchPartitionBackfill"]
        kind = result["__typename"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackfillError(
            f"{safe_url(url)} did not answer like a Dagster webserver"
        ) from None
    if kind != "LaunchBackfillSuccess":
        detail = " ".join(str(result.get("message", "")).split())[:300]
        raise BackfillError(f"webserver refused the backfill: {kind}: {detail}".rstrip(": "))
    return result["backfillId"]


def safe_url(url: str) -> str:
    """The URL to show a person: no user:password@, no query string, secrets redacted."""
    from urllib.parse import urlsplit, urlunsplit

    from cti_assets.providers.http import redact

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    except ValueError:
        return "the given --url"
