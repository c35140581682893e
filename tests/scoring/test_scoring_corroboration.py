"""Issue 14's combination rules, each on minimal rows: a provider is one witness, AbuseIPDB counts
reporters and recency, benign context yields only to two providers, harmless never vouches for
the unseen, and confidence grows with agreeing witnesses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cti_assets.providers.clients.virustotal import VirusTotalClient
from cti_assets.providers.config import ProviderSettings
from cti_assets.providers.names import bigram_score, lookalike_of
from cti_assets.scoring.components import parse_components
from cti_assets.scoring.model import BENIGN, MALICIOUS, SUSPICIOUS, UNKNOWN, score_frame
from cti_assets.scoring.weights import ScoringWeights
from tests.scoring.scoring_factories import FETCHED_AT, Lookup, merged_one

W = ScoringWeights()
EPOCH = int(FETCHED_AT.timestamp())


def score_of(answers: dict, entity_type: str = "IPv4-Addr"):
    return score_frame(merged_one(answers, entity_type)).iloc[0]


def abuse(score: int = 100, users: int = 1, days_ago: float = 0, **more) -> Lookup:
    last = (FETCHED_AT - timedelta(days=days_ago)).isoformat()  # "...+00:00", as AbuseIPDB
    return Lookup(fields={"abuse_confidence_score": score, "total_reports": max(users, 1),
                          "num_distinct_users": users, "last_reported_at": last,
                          "categories": [18, 22], **more})


def test_abuseipdb_grows_with_distinct_reporters_and_fades_with_the_last_report():
    by_users = [score_of({"abuseipdb": abuse(users=n)})["score"] for n in (1, 3, 10, 300)]
    assert by_users == sorted(by_users) and by_users[0] < by_users[-1]
    assert by_users[0] < W.suspicious_threshold  # one report by one user decides nothing
    assert by_users[2] == by_users[3] == round(100 * W.abuse_confidence_weight)
    by_age = [score_of({"abuseipdb": abuse(users=20, days_ago=d)})["score"] for d in (0, 30, 90)]
    assert by_age[0] > by_age[1] > by_age[2]
    assert by_age[1] == pytest.approx(by_age[0] / 2, abs=1)  # the half-life


def test_a_whitelisted_address_gets_no_malicious_abuseipdb_evidence():
    row = score_of({"abuseipdb": abuse(users=40, is_whitelisted=True, categories=[4, 7])})
    rules = [item["rule"] for item in parse_components(row["components"])]
    assert rules == ["abuse_whitelisted"]
    assert row["score"] == 0 and row["verdict"] == BENIGN


def test_one_providers_signals_are_one_capped_witness():
    vt = {"malicious": 2, "undetected": 68, "reputation": -40, "votes_malicious": 9,
          "categories": ["phishing", "malware sites"]}
    row = score_of({"virustotal": Lookup(fields=vt)}, "Domain-Name")
    items = parse_components(row["components"])
    assert {i["rule"] for i in items} == {"vt_malicious", "vt_reputation", "vt_votes",
                                          "vt_category"}
    # four VirusTotal signals, each weak: together far from a corroborated verdict
    assert row["verdict"] != MALICIOUS
    assert sum(i["contribution"] for i in items) == pytest.approx(row["score"], abs=1)
    greynoise = score_of({"greynoise": Lookup(fields={"classification": "malicious"})})
    assert greynoise["score"] == round(100 * W.witness_max["greynoise"])


def test_engine_count_needs_a_ratio():
    few_of_many = score_of({"virustotal": Lookup(fields={"malicious": 8, "harmless": 142})})
    many_of_few = score_of({"virustotal": Lookup(fields={"malicious": 8, "harmless": 52})})
    assert few_of_many["score"] < many_of_few["score"] == round(100 * W.vt_malicious_weight)


RIOT = Lookup(fields={"riot": True, "trust_level": "1", "name": "Microsoft 365"})


def test_one_provider_cannot_lift_a_benign_cap_two_can():
    one = score_of({"greynoise": RIOT, "abuseipdb": abuse(users=40)})
    assert one["score"] == W.gn_riot_trust1_cap and one["verdict"] == BENIGN
    two = score_of({"greynoise": RIOT, "abuseipdb": abuse(users=40),
                    "virustotal": Lookup(fields={"malicious": 20, "harmless": 50})})
    assert two["score"] >= W.malicious_threshold and two["verdict"] == MALICIOUS


def test_virustotal_alone_on_shared_infrastructure_stays_at_most_suspicious():
    cdn = {"network_context": Lookup(fields={"registrable_domain": "d1.cloudfront.net",
                                             "public_suffix": "cloudfront.net"}),
           "virustotal": Lookup(fields={"malicious": 30, "harmless": 50})}
    row = score_of(cdn, "Hostname")
    assert row["score"] == W.shared_infra_cap and row["verdict"] == SUSPICIOUS
    assert "shared infrastructure" not in row["explanation"]  # the cap binds: "capped at 45"
    assert "capped at 45 by shared cdn name (d1.cloudfront.net)" in row["explanation"]


@pytest.mark.parametrize(("entity_type", "fields"), [
    ("Url", {}),
    ("Domain-Name", {"creation_date": EPOCH - 3 * 86400}),
    ("Domain-Name", {}),  # never registered as far as anyone knows
])
def test_harmless_counts_never_vouch_for_the_unseen(entity_type, fields):
    row = score_of({"virustotal": Lookup(fields={"malicious": 0, "harmless": 70, **fields})},
                   entity_type)
    assert row["verdict"] != BENIGN
    assert not any(i["rule"] == "vt_harmless" for i in parse_components(row["components"]))


def test_an_old_clean_domain_is_benign():
    row = score_of({"virustotal": Lookup(fields={
        "malicious": 0, "harmless": 70, "creation_date": EPOCH - 3000 * 86400})}, "Domain-Name")
    assert row["verdict"] == BENIGN


def test_confidence_grows_with_agreeing_witnesses():
    gn = {"greynoise": Lookup(fields={"classification": "malicious"})}
    ab = {"abuseipdb": abuse(users=40)}
    vt = {"virustotal": Lookup(fields={"malicious": 20, "harmless": 50})}
    nothing = score_of({"greynoise": Lookup(status="not_found"),
                        "abuseipdb": abuse(score=0, users=0),
                        "virustotal": Lookup(fields={"malicious": 0, "undetected": 70})})
    one, two, three = score_of(gn), score_of({**gn, **ab}), score_of({**gn, **ab, **vt})
    assert nothing["verdict"] == UNKNOWN and nothing["confidence"] <= 40
    assert one["confidence"] < two["confidence"] < three["confidence"]


def test_bigram_model_reads_compound_names_as_words():
    ordinary = [bigram_score(label) for label in ("stackoverflow", "cloudflare-dns",
                                                  "harborviewdental")]
    random = [bigram_score(label) for label in ("xjwqkzvbprtl", "qzxkvbnwtrplmh")]
    assert max(ordinary) > W.nc_random_max_score > min(random) and max(random) < min(ordinary)


def test_lookalikes_of_popular_names():
    assert lookalike_of("barclaays", "barclaays.com") == "barclays.com"
    assert lookalike_of("secure-paypal-login", "secure-paypal-login.net") == "paypal.com"
    assert lookalike_of("paypal", "paypal.com") is None
    assert lookalike_of("cloudflare-dns", "cloudflare-dns.com") is None
    assert lookalike_of("harborviewdental", "harborviewdental.com") is None


def test_virustotal_client_reads_registration_and_popularity():
    client = VirusTotalClient(ProviderSettings(name="virustotal", api_key="k"))
    fields = client.parse_ok("Domain-Name", "example.com", {"data": {"attributes": {
        "last_analysis_stats": {"malicious": 0, "harmless": 60},
        "creation_date": 811_296_000,
        "popularity_ranks": {"Majestic": {"rank": 250, "timestamp": 1}, "Tranco": {
            "rank": 120, "timestamp": 1}, "Cisco Umbrella": {"rank": 0, "timestamp": 1}},
    }}})
    assert fields["creation_date"] == 811_296_000
    assert fields["popularity_rank"] == 120
    assert fields["first_submission_date"] is None
