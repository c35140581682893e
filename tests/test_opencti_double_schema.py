"""The OpenCTI double rejects, as the platform does, what the platform's schema rejects.

Raw HTTP POSTs over a real socket (requests), so the double sees exactly these documents and
variables; then a valid pycti call to show the valid path still works.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from graphql import parse
from pycti import OpenCTIApiClient

from tests.connector_double import ConnectorDouble
from tests.opencti_double import OpenCTIDouble
from tests.opencti_schema import (
    SCHEMA,
    parse_date_time,
    parse_stix_id,
    parse_stix_ref,
    request_errors,
)

OBSERVABLES = """
query Observables($filters: FilterGroup, $first: Int, $orderBy: StixCyberObservablesOrdering,
                  $orderMode: OrderingMode) {
  stixCyberObservables(filters: $filters, first: $first, orderBy: $orderBy,
                       orderMode: $orderMode) {
    edges { node { id standard_id observable_value } }
  }
}
"""
CREATED_AFTER: dict[str, Any] = {"mode": "and", "filterGroups": [],
                 "filters": [{"key": "created_at", "values": ["2025-03-01T00:00:00.000Z"],
                              "operator": "gte"}]}
NOTE_ADD = """
mutation NoteAdd($input: NoteAddInput!) {
  noteAdd(input: $input) { id standard_id }
}
"""


@pytest.fixture
def double() -> Iterator[OpenCTIDouble]:
    with OpenCTIDouble() as server:
        server.add_observable("IPv4-Addr", "198.51.100.1", datetime(2025, 3, 1, 9, tzinfo=UTC))
        yield server
        assert server.unsupported == [], server.unsupported


def post(double: OpenCTIDouble, query: str, variables: dict | None = None) -> requests.Response:
    return requests.post(f"{double.url}/graphql", json={"query": query, "variables": variables},
                         headers={"Authorization": f"Bearer {double.token}"}, timeout=10)


def rejected(response: requests.Response, code: str) -> str:
    """The one error of a response the platform would send for a rejected request."""
    assert response.status_code == 200  # the platform's httpResponsePlugin: errors -> 200
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"]["code"] == code
    return error["message"]


def test_a_valid_request_is_answered(double):
    response = post(double, OBSERVABLES, {"filters": CREATED_AFTER, "first": 10,
                                          "orderBy": "created_at", "orderMode": "asc"})
    assert response.status_code == 200
    edges = response.json()["data"]["stixCyberObservables"]["edges"]
    assert [e["node"]["observable_value"] for e in edges] == ["198.51.100.1"]
    assert double.invalid == []


def test_an_unknown_field_is_a_validation_error(double):
    query = OBSERVABLES.replace("observable_value", "observable_valu")
    message = rejected(post(double, query, {"first": 10}), "GRAPHQL_VALIDATION_FAILED")
    assert "Cannot query field 'observable_valu' on type 'StixCyberObservable'" in message
    assert double.invalid == [f"GRAPHQL_VALIDATION_FAILED: {message}"]
    assert double.calls_to("stixCyberObservables") == 1  # seen, but never run


def test_an_unknown_argument_is_a_validation_error(double):
    query = "query { stixCyberObservables(orderby: created_at) { edges { node { id } } } }"
    message = rejected(post(double, query), "GRAPHQL_VALIDATION_FAILED")
    assert "Unknown argument 'orderby'" in message


@pytest.mark.parametrize(("variables", "wrong"), [
    ({"orderBy": "created"}, "created"),  # not a StixCyberObservablesOrdering
    ({"orderMode": "ascending"}, "ascending"),
    ({"filters": {**CREATED_AFTER, "mode": "AND"}}, "AND"),
    ({"filters": {**CREATED_AFTER,
                  "filters": [{**CREATED_AFTER["filters"][0], "operator": "after"}]}}, "after"),
])
def test_a_wrong_enum_value_is_a_bad_user_input(double, variables, wrong):
    message = rejected(post(double, OBSERVABLES, variables), "BAD_USER_INPUT")
    assert f"'{wrong}'" in message and "does not exist" in message


def test_a_wrong_enum_literal_is_a_validation_error(double):
    query = ("query { stixCyberObservables(orderBy: created, orderMode: asc) "
             "{ edges { node { id } } } }")
    message = rejected(post(double, query), "GRAPHQL_VALIDATION_FAILED")
    assert "Value 'created' does not exist in 'StixCyberObservablesOrdering' enum" in message


@pytest.mark.parametrize(("filters", "complaint"), [
    ({"filters": CREATED_AFTER["filters"], "filterGroups": []},
     "Field 'mode' of required type 'FilterMode!' was not provided"),
    ({"mode": "and", "filterGroups": []},
     "Field 'filters' of required type '[Filter!]!' was not provided"),
    ({"mode": "and", "filters": CREATED_AFTER["filters"]},
     "Field 'filterGroups' of required type '[FilterGroup!]!' was not provided"),
    ({**CREATED_AFTER, "filterMode": "and"}, "Field 'filterMode' is not defined by type"),
    ({**CREATED_AFTER, "filters": [{"key": "created_at", "operator": "gte"}]},
     "Field 'values' of required type '[Any!]!' was not provided"),
    ({**CREATED_AFTER, "filterGroups": [{"mode": "or", "filters": []}]},
     "Field 'filterGroups' of required type '[FilterGroup!]!' was not provided"),
])
def test_a_malformed_filter_group_is_a_bad_user_input(double, filters, complaint):
    message = rejected(post(double, OBSERVABLES, {"filters": filters}), "BAD_USER_INPUT")
    assert complaint in message


@pytest.mark.parametrize("bad", ["2025-03-01", "2025-03-01 00:00:00Z", "2025-02-30T00:00:00Z",
                                 "2025-03-01T24:00:00Z", "2025-03-01T00:00:00", "yesterday", ""])
def test_a_bad_date_time_is_a_bad_user_input(double, bad):
    ip = double.objects("IPv4-Addr")[0]
    note = {"content": "benign: nothing seen", "objects": [ip["id"]], "created": bad}
    message = rejected(post(double, NOTE_ADD, {"input": note}), "BAD_USER_INPUT")
    assert "DateTime cannot represent" in message
    assert double.count("Note") == 0


def test_a_bad_date_time_literal_is_a_validation_error(double):
    ip = double.objects("IPv4-Addr")[0]
    query = ('mutation { noteAdd(input: {content: "x y", objects: ["' + ip["id"]
             + '"], created: "1 March"}) { id } }')
    message = rejected(post(double, query), "GRAPHQL_VALIDATION_FAILED")
    assert "DateTime cannot represent an invalid date-time-string 1 March." in message
    assert double.count("Note") == 0


def test_an_unknown_input_field_is_a_bad_user_input(double):
    ip = double.objects("IPv4-Addr")[0]
    note = {"content": "benign: nothing seen", "objects": [ip["id"]], "observable": "x"}
    message = rejected(post(double, NOTE_ADD, {"input": note}), "BAD_USER_INPUT")
    assert "Field 'observable' is not defined by type 'NoteAddInput'" in message


def test_a_malformed_stix_id_is_a_bad_user_input(double):
    ip = double.objects("IPv4-Addr")[0]
    note = {"content": "benign: nothing seen", "objects": [ip["id"]], "stix_id": "note--42"}
    message = rejected(post(double, NOTE_ADD, {"input": note}), "BAD_USER_INPUT")
    assert "not a valid STIX ID (UUID not valid)" in message


def test_a_syntax_error_is_a_parse_failure(double):
    message = rejected(post(double, "query { about { version }"), "GRAPHQL_PARSE_FAILED")
    assert "Syntax Error" in message
    assert double.invalid == [f"GRAPHQL_PARSE_FAILED: {message}"]


def test_pycti_calls_still_validate_and_work(double):
    api = OpenCTIApiClient(double.url, double.token, log_level="error",
                           perform_health_check=False)
    ip = double.objects("IPv4-Addr")[0]

    note = api.note.create(stix_id="note--00000000-0000-4000-8000-000000000001",
                           objects=[ip["id"]], content="benign: 198.51.100.1",
                           created="2025-03-01T00:00:00.000Z")
    read = api.stix_cyber_observable.read(id=ip["standard_id"])
    listed = api.stix_core_relationship.list(fromOrToId=[ip["id"]])

    assert double.get(note["id"])["content"] == "benign: 198.51.100.1"
    assert read["observable_value"] == "198.51.100.1" and listed == []
    assert double.invalid == []


def test_pycti_raises_on_a_rejected_request(double):
    """pycti turns the platform's error into an exception: a rejected write never passes."""
    api = OpenCTIApiClient(double.url, double.token, log_level="error",
                           perform_health_check=False)
    ip = double.objects("IPv4-Addr")[0]
    with pytest.raises(ValueError, match="BAD_USER_INPUT"):
        api.note.create(objects=[ip["id"]], content="benign", created="2025-03-01")
    assert double.count("Note") == 0 and len(double.invalid) == 1


@pytest.mark.parametrize("value", ["2025-03-01T00:00:00Z", "2025-03-01T00:00:00.123456Z",
                                   "2025-03-01t00:00:00z", "2024-02-29T23:59:60+01:00"])
def test_rfc3339_date_times_are_accepted(value):
    assert parse_date_time(value) == value


def test_stix_refs_take_a_stix_id_or_an_internal_uuid():
    assert parse_stix_ref("ipv4-addr--2b3e2c17-3144-5591-9c88-a605220f8c0c")
    assert parse_stix_ref("1f7726aa-e05e-4bc0-b989-9b427875412b")
    assert parse_stix_id("note--00000000-0000-4000-8000-000000000001")
    for bad in ("APT28", "Indicator--2b3e2c17-3144-5591-9c88-a605220f8c0c", "x--not-a-uuid"):
        with pytest.raises(Exception, match="not a valid STIX"):
            parse_stix_ref(bad)


def test_every_root_field_of_the_schema_is_one_the_double_answers():
    """The schema declares only operations the doubles implement (`*Edit` go through `_edit`)."""
    assert SCHEMA.query_type is not None and SCHEMA.mutation_type is not None
    roots = {*SCHEMA.query_type.fields, *SCHEMA.mutation_type.fields}
    handled = {name[3:] for name in dir(ConnectorDouble) if name.startswith("_q_")}
    edits = {name for name in roots if name.endswith("Edit")}
    assert roots - edits <= handled, roots - edits - handled
    assert request_errors(parse("{ about { version } }"), {}) == []
