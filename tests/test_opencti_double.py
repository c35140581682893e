"""The OpenCTI double enforces the platform's rules (reference/pycti.md section 9), one test each.

Every request goes through unmodified pycti over a real socket, as in the source's tests.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pycti import OpenCTIApiClient

from tests.opencti_double import OpenCTIDouble

DAY = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def double():
    with OpenCTIDouble() as server:
        yield server
        assert server.unsupported == [], server.unsupported


@pytest.fixture
def api(double):
    return OpenCTIApiClient(double.url, double.token, log_level="error",
                            perform_health_check=False)


def test_relationship_filters_match_internal_ids_only(double, api):
    ip = double.add_observable("IPv4-Addr", "198.51.100.1", DAY)
    apt = double.add_threat("Intrusion-Set", "APT28")
    double.add_relationship("related-to", ip["id"], apt["id"])

    by_standard = api.stix_core_relationship.list(fromOrToId=[ip["standard_id"]])
    by_internal = api.stix_core_relationship.list(fromOrToId=[ip["id"]])
    to_standard = api.stix_core_relationship.list(toId=[apt["standard_id"]])
    to_internal = api.stix_core_relationship.list(toId=[apt["id"]])

    assert by_standard == [] and to_standard == []
    assert [r["relationship_type"] for r in by_internal] == ["related-to"]
    assert len(to_internal) == 1
