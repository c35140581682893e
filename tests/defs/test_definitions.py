"""The code location loads, and its asset graph is the documented one."""

import dagster as dg

from cti_assets.definitions import defs

CHEAP = {"network_context_lookups", "shodan_internetdb_lookups", "greynoise_lookups",
         "abuseipdb_lookups", "urlhaus_lookups", "threatfox_lookups", "malwarebazaar_lookups",
         "otx_lookups"}
EXPENSIVE = {"virustotal_lookups", "securitytrails_lookups", "shodan_lookups",
             "crowdsec_lookups"}
EXPECTED_PARENTS = {
    "observables": set(),
    **{name: {"observables"} for name in CHEAP},
    "lookup_triage": {"observables", *CHEAP},
    **{name: {"observables", "lookup_triage"} for name in EXPENSIVE},
    "merged_enrichment": {"observables", *CHEAP, *EXPENSIVE},
    "threat_context": {"observables", "merged_enrichment"},
    "observable_scores": {"merged_enrichment", "threat_context"},
    "opencti_writeback": {"observable_scores", "threat_context", "observables",
                          "merged_enrichment"},  # its fetched_at dates the write-back
}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_is_cheap_then_triage_then_expensive():
    graph = defs.resolve_asset_graph()
    actual = {
        key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert actual == EXPECTED_PARENTS


def test_every_provider_asset_has_its_own_pool():
    graph = defs.resolve_asset_graph()
    for provider in ("virustotal", "shodan", "securitytrails", "greynoise", "abuseipdb",
                     "urlhaus", "threatfox", "malwarebazaar", "otx", "crowdsec"):
        node = graph.get(dg.AssetKey(f"{provider}_lookups"))
        assert node.pools == {provider}


def test_score_checks_are_blocking():
    scores = defs.get_assets_def("observable_scores")
    specs = {spec.name: spec for spec in scores.check_specs}
    assert set(specs) == {
        "score_in_range",
        "one_row_per_observable",
        "no_duplicate_ids",
        "every_score_explained",
    }
    assert all(spec.blocking for spec in specs.values())


def test_secrets_are_env_vars_not_values(monkeypatch):
    from cti_assets.defs.resources import provider_resource

    monkeypatch.setenv("VIRUSTOTAL_API_KEY", "canary-secret-value")
    resource = provider_resource("virustotal")
    assert isinstance(resource.api_key, dg.EnvVar)
    assert "canary-secret-value" not in repr(resource)


def test_provider_without_key_binds_no_secret(monkeypatch):
    from cti_assets.defs.resources import provider_resource

    monkeypatch.delenv("SHODAN_API_KEY", raising=False)
    assert provider_resource("shodan").api_key is None
