"""OpenCTISource against the GraphQL double, with pycti unmodified doing the talking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cti_assets.sources.base import Source, SourceError
from cti_assets.sources.opencti import OpenCTISource, redact_url
from tests.opencti_double import OpenCTIDouble

DAY = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def double():
    with OpenCTIDouble() as server:
        yield server
        assert server.unsupported == [], f"pycti sent queries the double does not know: " \
                                         f"{server.unsupported}"
        assert server.invalid == [], f"requests the platform would reject: {server.invalid}"


def make_source(double: OpenCTIDouble, **overrides) -> OpenCTISource:
    options = {"page_size": 2, "backoff_s": 0, "max_attempts": 3, "timeout_s": 5}
    options.update(overrides)
    return OpenCTISource(double.url, overrides.pop("token", double.token), **{
        k: v for k, v in options.items() if k != "token"})


def seed_day(double: OpenCTIDouble) -> list[dict]:
    """Five observables inside DAY, one on each side of it."""
    double.add_observable("IPv4-Addr", "203.0.113.250", DAY - timedelta(seconds=1))
    inside = [
        double.add_observable("IPv4-Addr", "198.51.100.1", DAY, labels=("feed-x",), score=30),
        double.add_observable("Domain-Name", "evil.example", DAY + timedelta(hours=1),
                              markings=("TLP:AMBER+STRICT", "PAP:RED")),
        double.add_observable("Url", "http://evil.example/a'b", DAY + timedelta(hours=2)),
        double.add_observable("StixFile", None, DAY + timedelta(hours=3),
                              hashes={"MD5": "d41d8cd98f00b204e9800998ecf8427e",
                                      "SHA-256": "e3b0c44298fc1c149afbf4c8996fb924"
                                                 "27ae41e4649b934ca495991b7852b855"}),
        double.add_observable("IPv6-Addr", "2001:db8::1", DAY + timedelta(hours=23, minutes=59)),
    ]
    double.add_observable("Hostname", "late.example", DAY + timedelta(days=1))
    return inside


def test_satisfies_the_source_protocol(double):
    assert isinstance(make_source(double), Source)


def test_partition_read_pages_through_every_observable_in_the_half_open_window(double):
    inside = seed_day(double)
    source = make_source(double, page_size=2)

    records = source.observables_created_between(DAY, DAY + timedelta(days=1))

    assert [r.stix_id for r in records] == [n["standard_id"] for n in inside]
    assert double.calls_to("stixCyberObservables") == 3  # 5 observables, 2 per page
    first, domain, _, stix_file, _ = records
    assert first.value == "198.51.100.1" and first.labels == ("feed-x",) and first.score == 30
    assert first.marking_definitions == ("TLP:AMBER",)
    assert sorted(domain.marking_definitions) == ["PAP:RED", "TLP:AMBER+STRICT"]
    assert "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37" in domain.marking_ids
    assert stix_file.value.startswith("e3b0c442") and set(stix_file.hashes) == {"MD5", "SHA-256"}
    assert all(r.created_at.tzinfo is not None for r in records)


def test_partition_read_sends_gte_lt_filters_and_ascending_order(double):
    make_source(double).observables_created_between(DAY, DAY + timedelta(days=1))
    variables = next(v for name, v in double.calls if name == "stixCyberObservables")
    operators = {f["key"] + ":" + (f.get("operator") or "eq") for f in
                 variables["filters"]["filters"]}
    assert operators == {"created_at:gte", "created_at:lt", "entity_type:eq"}
    assert (variables["orderBy"], variables["orderMode"]) == ("created_at", "asc")


def test_created_since_is_strictly_after_the_watermark_and_limited(double):
    inside = seed_day(double)
    source = make_source(double)
    everything = source.created_since(None, None, 100)
    assert len(everything) == 7

    watermark = (DAY, inside[0]["standard_id"])
    after = source.created_since(*watermark, limit=2)

    assert [stix_id for _, stix_id in after] == [inside[1]["standard_id"],
                                                 inside[2]["standard_id"]]
    assert all(key > watermark for key in after)


def test_threat_entities_lists_actors_sets_campaigns_and_malware(double):
    double.add_threat("Threat-Actor-Group", "Sandworm", ("Voodoo Bear",))
    double.add_threat("Threat-Actor-Individual", "Lone Wolf")
    double.add_threat("Intrusion-Set", "APT28", ("Fancy Bear", "Sofacy"))
    double.add_threat("Campaign", "Operation X")
    double.add_threat("Malware", "Emotet")

    entities = make_source(double, page_size=2).threat_entities()

    by_name = {e.name: e for e in entities}
    assert set(by_name) == {"Sandworm", "Lone Wolf", "APT28", "Operation X", "Emotet"}
    assert by_name["Sandworm"].entity_type == "threat-actor"
    assert by_name["APT28"].aliases == ("Fancy Bear", "Sofacy")
    assert by_name["Emotet"].stix_id.startswith("malware--")


def test_threat_context_follows_direct_links_and_indicators(double):
    direct_ip = double.add_observable("IPv4-Addr", "198.51.100.10", DAY)
    via_indicator = double.add_observable("Domain-Name", "c2.example", DAY)
    unrelated = double.add_observable("IPv4-Addr", "198.51.100.11", DAY)
    apt = double.add_threat("Intrusion-Set", "APT28")
    emotet = double.add_threat("Malware", "Emotet")
    double.add_relationship("related-to", direct_ip["id"], apt["id"])
    indicator = double.add_indicator("[domain-name:value = 'c2.example']", "c2", "Domain-Name")
    double.add_relationship("based-on", indicator["id"], via_indicator["id"])
    double.add_relationship("indicates", indicator["id"], emotet["id"])

    links = make_source(double).threat_context(
        [direct_ip["standard_id"], via_indicator["standard_id"], unrelated["standard_id"]]
    )

    assert [(link.observable_stix_id, link.entity.name, link.via, link.relationship_type)
            for link in links] == sorted([
        (direct_ip["standard_id"], "APT28", "direct", "related-to"),
        (via_indicator["standard_id"], "Emotet", "indicator", "indicates"),
    ])
    indicator_link = next(link for link in links if link.via == "indicator")
    assert indicator_link.indicator_stix_id == indicator["standard_id"]


def test_check_passes_with_the_right_token(double):
    make_source(double).check()


def test_wrong_token_gives_one_clear_source_error_without_the_token(double):
    source = OpenCTISource(double.url, "wrong-secret-token", backoff_s=0)
    with pytest.raises(SourceError) as caught:
        source.check()
    message = str(caught.value)
    assert "OPENCTI_TOKEN" in message and "refused the token" in message
    assert "wrong-secret-token" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert double.calls_to("me") == 1  # an auth error is not retried


def test_unreachable_platform_is_retried_then_reported(double):
    url = double.url
    double.stop()
    source = OpenCTISource(url, "token", backoff_s=0, max_attempts=2, timeout_s=2)
    with pytest.raises(SourceError, match="unreachable .*after 2 attempts.*OPENCTI_URL"):
        source.observables_created_between(DAY, DAY + timedelta(days=1))
    double.start()  # the fixture's teardown expects a running server


def test_tls_failure_is_one_clear_error_and_not_retried(double):
    source = OpenCTISource(double.url.replace("http://", "https://"), "token", backoff_s=0)
    with pytest.raises(SourceError, match="TLS with OpenCTI at https://127.0.0.1:.* failed") \
            as caught:
        source.check()
    assert "OPENCTI_SSL_VERIFY" in str(caught.value)
    assert "after" not in str(caught.value)  # a TLS problem is not transient


def test_http_5xx_on_a_page_is_retried_and_the_read_completes(double):
    inside = seed_day(double)
    source = make_source(double, page_size=2)
    double.fail_on("stixCyberObservables", n=2, status=503)

    records = source.observables_created_between(DAY, DAY + timedelta(days=1))

    assert [r.stix_id for r in records] == [n["standard_id"] for n in inside]
    assert double.calls_to("stixCyberObservables") == 3 + 2


def test_persistent_5xx_becomes_one_source_error(double):
    double.fail_next(10, status=502)
    with pytest.raises(SourceError, match="HTTP 502 .*after 3 attempts"):
        make_source(double).threat_entities()


def test_graphql_error_is_not_retried(double):
    double.graphql_error_next(1)
    with pytest.raises(SourceError, match="rejected the threat entity listing"):
        make_source(double).threat_entities()
    assert double.calls_to("stixDomainObjects") == 1


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        ("", "t", "OPENCTI_URL"),
        ("localhost:8080", "t", "OPENCTI_URL"),
        ("http://localhost:8080", "", "OPENCTI_TOKEN"),
        ("http://localhost:8080", "ChangeMe", "OPENCTI_TOKEN"),
    ],
)
def test_bad_configuration_is_refused_up_front(url, token, message):
    with pytest.raises(SourceError, match=message):
        OpenCTISource(url, token)


def test_redact_url_drops_credentials_and_query():
    assert redact_url("https://user:pw@cti.example:8443/path?token=x#f") == \
        "https://cti.example:8443/path"


def test_empty_window_is_refused(double):
    with pytest.raises(SourceError, match="empty window"):
        make_source(double).observables_created_between(DAY, DAY)


def test_threat_context_filters_relationships_by_internal_ids(double):
    """The platform matches fromOrToId/toId on internal ids only; the ids read with the
    observables are used as they are, and a missing one is looked up first."""
    ip = double.add_observable("IPv4-Addr", "198.51.100.10", DAY)
    domain = double.add_observable("Domain-Name", "c2.example", DAY)
    apt = double.add_threat("Intrusion-Set", "APT28")
    double.add_relationship("related-to", ip["id"], apt["id"])
    indicator = double.add_indicator("[domain-name:value = 'c2.example']", "c2", "Domain-Name")
    double.add_relationship("based-on", indicator["id"], domain["id"])
    double.add_relationship("indicates", indicator["id"], apt["id"])
    source = make_source(double)
    records = source.observables_created_between(DAY, DAY + timedelta(days=1))

    links = source.threat_context([r.stix_id for r in records],
                                  {r.stix_id: r.internal_id for r in records})

    assert {(link.observable_stix_id, link.via) for link in links} == {
        (ip["standard_id"], "direct"), (domain["standard_id"], "indicator")}
    assert double.calls_to("stixCoreObjects") == 0  # nothing to look up
    sent = [v for name, v in double.calls if name == "stixCoreRelationships"]
    assert {i for v in sent for i in v.get("fromOrToId") or []} == {ip["id"], domain["id"]}

    looked_up = make_source(double).threat_context([ip["standard_id"], domain["standard_id"]])
    assert looked_up == links


def test_check_fails_clearly_when_the_platform_and_pycti_versions_differ():
    with OpenCTIDouble(version="6.9.29") as double:
        with pytest.raises(SourceError) as caught:
            make_source(double).check()
    message = str(caught.value)
    assert "runs version 6.9.29 but pycti is 7.261026.0" in message
    assert "pycti==6.9.29" in message


def test_a_token_that_may_not_write_fails_once_before_any_write():
    with OpenCTIDouble(capabilities=("KNOWLEDGE",)) as double:
        double.add_observable("IPv4-Addr", "198.51.100.1", DAY)
        source = make_source(double)
        bundle = {"type": "bundle", "id": "bundle--x", "objects": [
            {"type": "ipv4-addr", "spec_version": "2.1", "value": "198.51.100.1",
             "id": double.objects("IPv4-Addr")[0]["standard_id"], "x_opencti_score": 90}]}
        with pytest.raises(SourceError, match="may not write knowledge.*KNOWLEDGE_KNUPDATE"):
            source.write_bundle(bundle)
        assert not [name for name, _ in double.calls if name.endswith(("Add", "Edit"))]
        assert double.objects("IPv4-Addr")[0]["x_opencti_score"] is None


def test_current_scores_reads_each_observables_score_by_its_standard_id(double):
    """What the write-back decides against: the score the platform holds now, none for an
    observable without one, nothing for an id the platform does not know."""
    inside = seed_day(double)
    source = make_source(double)
    ids = [node["standard_id"] for node in inside[:2]]
    assert source.current_scores([*ids, "ipv4-addr--00000000-0000-4000-8000-000000000000"]) == {
        ids[0]: 30}
