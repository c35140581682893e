"""The GraphQL schema the OpenCTI double checks every request against, as the platform does.

tests/opencti_schema.graphql holds the types (written from the platform's SDL); this module adds
what SDL cannot say: the platform's scalar rules (opencti-graphql src/graphql/schema.js:
graphql-scalars' RFC 3339 DateTime, `StixId` = `<type>--<uuid>`, `StixRef` = a STIX id or an
internal UUID), and answers a request the way the platform's Apollo Server 4 does before running
it: document validation errors carry `GRAPHQL_VALIDATION_FAILED`, variable coercion errors
`BAD_USER_INPUT` (the platform's httpResponsePlugin answers both with HTTP 200).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLScalarType,
    GraphQLSchema,
    StringValueNode,
    ValueNode,
    build_schema,
    get_operation_ast,
    validate,
)
from graphql.execution.values import get_variable_values

SCHEMA_PATH = Path(__file__).with_name("opencti_schema.graphql")

# graphql-scalars' DateTime (what the platform uses): RFC 3339, upper-cased before matching.
_RFC3339 = re.compile(
    r"^(\d{4})-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):([0-5][0-9]):"
    r"([0-5][0-9]|60)(\.\d+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
# The `uuid` package's validate(): versions 1-8, RFC 4122 variant, or the nil / max UUID.
_UUID = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$",
    re.IGNORECASE,
)
_STIX_TYPE = re.compile(r"^[a-z][a-z0-9-]*$")


def parse_date_time(value: Any) -> str:
    """A DateTime variable or literal: an RFC 3339 date-time string with a real calendar date."""
    if not isinstance(value, str):
        raise GraphQLError(f"DateTime cannot represent non string or Date type {value!r}")
    match = _RFC3339.match(value.upper())
    valid = match is not None
    if match is not None:
        try:
            date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            valid = False
    if not valid:
        raise GraphQLError(f"DateTime cannot represent an invalid date-time-string {value}.")
    return value


def parse_stix_id(value: Any) -> str:
    """A StixId: `<type>--<uuid>` (the platform also checks that it supports the type)."""
    if not isinstance(value, str) or "--" not in value:
        raise GraphQLError("Provided value is not a valid STIX ID")
    stix_type, _, uuid = value.partition("--")
    if not _STIX_TYPE.match(stix_type):
        raise GraphQLError("Provided value is not a valid STIX ID (type not supported)")
    if not _UUID.match(uuid):
        raise GraphQLError("Provided value is not a valid STIX ID (UUID not valid)")
    return value


def parse_stix_ref(value: Any) -> str:
    """A StixRef: a STIX id or an internal id (a UUID)."""
    if isinstance(value, str) and "--" in value:
        return parse_stix_id(value)
    if isinstance(value, str) and _UUID.match(value):
        return value
    raise GraphQLError("Provided value is not a valid STIX Reference")


def _literal(parse: Callable[[Any], str]) -> Callable[..., str]:
    def parse_literal(node: ValueNode, _variables: Any = None) -> str:
        if not isinstance(node, StringValueNode):
            raise GraphQLError("Expected a string literal")
        return parse(node.value)

    return parse_literal


def build() -> GraphQLSchema:
    """The schema of tests/opencti_schema.graphql with the platform's scalar rules installed."""
    schema = build_schema(SCHEMA_PATH.read_text())
    for name, parse in (("DateTime", parse_date_time), ("StixId", parse_stix_id),
                        ("StixRef", parse_stix_ref)):
        scalar = schema.type_map[name]
        assert isinstance(scalar, GraphQLScalarType)
        scalar.parse_value = parse  # type: ignore[method-assign]
        scalar.parse_literal = _literal(parse)  # type: ignore[method-assign]
    return schema


SCHEMA = build()


def _error(error: GraphQLError, code: str) -> dict[str, Any]:
    formatted: dict[str, Any] = {"message": error.message, "extensions": {"code": code}}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column}
                                  for loc in error.locations]
    return formatted


def request_errors(document: DocumentNode, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors the platform answers this request with before running it; [] when valid."""
    return document_errors(document) or variable_errors(document, variables)


def document_errors(document: DocumentNode) -> list[dict[str, Any]]:
    """The document's validation errors: they depend on the query text only, so the platform
    (Apollo Server's document store) and the double keep them per query."""
    return [_error(error, "GRAPHQL_VALIDATION_FAILED") for error in validate(SCHEMA, document)]


def variable_errors(document: DocumentNode, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors of coercing this request's variables (a valid document assumed)."""
    operation = get_operation_ast(document)
    if operation is None:
        return [{"message": "Could not determine the operation to run",
                 "extensions": {"code": "BAD_REQUEST"}}]
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or [], variables)
    if isinstance(coerced, list):
        return [_error(error, "BAD_USER_INPUT") for error in coerced]
    return []
