"""Launch real asset backfills through the webserver's GraphQL (launchPartitionBackfill).

`dagster job backfill` ignores BackfillPolicy and `dagster asset materialize` bypasses the run
queue; a daemon-managed asset backfill does neither. Backfills carry a lower priority than
sensor runs, so fresh observables go first.
"""

from __future__ import annotations

from datetime import date, timedelta

import requests

from cti_assets.defs.automation import BACKFILL_PRIORITY

JOB_ASSETS = {
    "rescore": ["merged_enrichment", "observable_scores"],
}

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


def day_keys(date_from: str, date_to: str) -> list[str]:
    """Inclusive list of daily partition keys."""
    try:
        first, last = date.fromisoformat(date_from), date.fromisoformat(date_to)
    except ValueError as error:
        raise BackfillError(f"dates must be YYYY-MM-DD: {error}") from None
    if last < first:
        raise BackfillError(f"--to {date_to} is before --from {date_from}")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def backfill_params(
    date_from: str, date_to: str, assets: list[str] | None = None, job: str | None = None
) -> dict:
    if job and job not in JOB_ASSETS:
        raise BackfillError(f"unknown job {job!r}; known: {', '.join(JOB_ASSETS)}")
    selected = assets or (JOB_ASSETS[job] if job else None)
    if not selected:
        from cti_assets.definitions import defs

        graph = defs.resolve_asset_graph()
        selected = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    return {
        "assetSelection": [{"path": name.split("/")} for name in selected],
        "partitionNames": day_keys(date_from, date_to),
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
    params = backfill_params(date_from, date_to, assets, job)
    try:
        response = requests.post(
            f"{url.rstrip('/')}/graphql",
            json={"query": LAUNCH_BACKFILL, "variables": {"backfillParams": params}},
            timeout=timeout_s,
        )
    except requests.RequestException as error:
        raise BackfillError(f"cannot reach the Dagster webserver at {url}: {error}") from None
    if response.status_code != 200:
        raise BackfillError(f"webserver answered HTTP {response.status_code}")
    payload = response.json()
    if payload.get("errors"):
        raise BackfillError(payload["errors"][0].get("message", "GraphQL error"))
    result = payload["data"]["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"{result['__typename']}: {result.get('message', '')}")
    return result["backfillId"]
