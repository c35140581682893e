"""cti-assets as an OpenCTI INTERNAL_ENRICHMENT connector (issue 16).

Analysts ask OpenCTI to enrich an observable; pycti's OpenCTIConnectorHelper registers us,
verifies and delivers the request, and reports work progress. We turn requests into Dagster runs
of the enrichment job (coalesced per partition), launched through the webserver's GraphQL, and
report each run's outcome back on the OpenCTI work. Dagster-free: the command lives in cli/.

Modules: config (settings), request (what a message asks for, or why it is refused), ledger
(durable record of accepted requests), dagster_api (launch and watch runs), dispatcher
(coalesce, launch, report), service (wire the helper to the rest).
"""
