"""Launch and watch enrichment runs through the Dagster webserver's GraphQL.

Through the webserver (as `cti-assets backfill` does), so connector runs show in the Dagster UI
like any other, go through the instance's run coordinator, and carry tags naming the OpenCTI
works and the requesting users. The batch tag makes a launch findable after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

BATCH_TAG = "cti/connector_batch"
WORKS_TAG = "cti/opencti_works"
USERS_TAG = "cti/requested_by"
TERMINAL = ("SUCCESS", "FAILURE", "CANCELED")

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""
FIND = """
query Find($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status } } }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
FAILURE = """
query Failure($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent {
          stepKey error { className message cause { className message } }
        }
      }
    }
  }
}
"""


class DagsterUnavailableError(RuntimeError):
    """The webserver could not be reached or answered with an error: retry later."""


class LaunchRefusedError(RuntimeError):
    """The webserver refused the run (bad config, unknown job): retrying will not help."""


@dataclass(frozen=True)
class RunOutcome:
    status: str
    error_class: str | None = None
    failed_step: str | None = None


class DagsterApi:
    """A small GraphQL client for one webserver and one job."""

    def __init__(self, url: str, *, location: str = "cti_assets", job: str = "enrichment",
                 timeout_s: float = 30.0, public_url: str = "") -> None:
        self.url = url.rstrip("/")
        self.public_url = public_url.rstrip("/") or self.url
        self.location = location
        self.job = job
        self.timeout_s = timeout_s

    def run_url(self, run_id: str) -> str:
        return f"{self.public_url}/runs/{run_id}"

    def _query(self, query: str, variables: dict) -> dict:
        try:
            response = requests.post(f"{self.url}/graphql",
                                     json={"query": query, "variables": variables},
                                     timeout=self.timeout_s)
        except requests.RequestException as error:
            raise DagsterUnavailableError(f"Dagster webserver at {self.url} unreachable: "
                                     f"{type(error).__name__}") from None
        if response.status_code != 200:
            raise DagsterUnavailableError(f"Dagster webserver answered HTTP {response.status_code}")
        payload = response.json()
        if payload.get("errors"):
            raise DagsterUnavailableError(payload["errors"][0].get("message", "GraphQL error"))
        return payload["data"]

    def launch(self, partition: str, refresh_values: list[str], tags: dict[str, str]) -> str:
        """Launch the job for one partition with those values refreshed; return the run id."""
        # one owner of the refresh run config: the enrich command's (the layout test lets
        # only defs/cli own run wiring; it is Dagster-free)
        from cti_assets.refresh import run_config_refreshing

        params = {
            "selector": {"repositoryLocationName": self.location,
                         "repositoryName": "__repository__", "jobName": self.job},
            "runConfigData": run_config_refreshing(refresh_values),
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition},
                                           *({"key": k, "value": v} for k, v in tags.items())]},
        }
        result = self._query(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return result["run"]["runId"]
        detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        if result["__typename"] == "PythonError":
            raise DagsterUnavailableError(f"launch failed: {detail}")
        raise LaunchRefusedError(f"{result['__typename']}: {detail}")

    def find_run(self, batch_id: str) -> str | None:
        """The run already launched for this batch, if any."""
        found = self._query(FIND, {"tags": [{"key": BATCH_TAG, "value": batch_id}]})
        results = (found.get("runsOrError") or {}).get("results") or []
        return results[0]["runId"] if results else None

    def outcome(self, run_id: str) -> RunOutcome:
        """The run's status, and for a failure the class of the first step error."""
        run = self._query(STATUS, {"id": run_id})["runOrError"]
        if run["__typename"] != "Run":
            return RunOutcome("FAILURE", error_class="RunNotFound")
        status = run["status"]
        if status != "FAILURE":
            return RunOutcome(status, error_class="RunCanceled" if status == "CANCELED" else None)
        logs = self._query(FAILURE, {"id": run_id})["logsForRun"]
        for event in logs.get("events") or []:
            if event["__typename"] == "ExecutionStepFailureEvent" and event.get("error"):
                error = event["error"]
                cause = error.get("cause") or {}
                return RunOutcome(status, error_class=cause.get("className")
                                  or error.get("className"), failed_step=event.get("stepKey"))
        return RunOutcome(status, error_class="RunFailure")
