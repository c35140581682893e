"""`cti-assets enrich`: bare values typed as STIX observables, imported, their day run against
the provider sandbox and their scores printed; enriching again fetches just those values anew."""

from __future__ import annotations

import ipaddress

import pytest
import stix2

from cti_assets.cli import main as cli
from cti_assets.cli.enrich import UnknownValueError, enrich_now, guess_observable
from cti_assets.cli.errors import CliError
from cti_assets.providers.base import ABUSEIPDB, GREYNOISE, INTERNETDB
from tests.cli.support import one_line, point_at_sandbox

MD5 = "0cc175b9c0f1b6a831c399e269772661"
SHA1 = "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"
SHA256 = "ca978112ca1bbdcafac231b39a23dc4da786eff8146d4e2e5e8e5b8a7d3f3b1c"
CHEAP_API_PROVIDERS = (INTERNETDB, GREYNOISE, ABUSEIPDB)


# --- typing a bare value ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["45.83.73.1", " 45.83.73.1\n", "8.8.8.8"])
def test_ipv4(text):
    sco = guess_observable(text)
    assert sco["type"] == "ipv4-addr" and sco["value"] == text.strip()
    assert sco["id"] == stix2.IPv4Address(value=text.strip()).id


@pytest.mark.parametrize("text", ["2001:4860:4860::8888", "2001:4860:4860:0:0:0:0:8888",
                                  "2A00:1450:4001:82B::200E"])
def test_ipv6_in_its_canonical_form(text):
    sco = guess_observable(text)
    canonical = ipaddress.IPv6Address(text).compressed
    assert sco["type"] == "ipv6-addr" and sco["value"] == canonical
    # every spelling of one address is one observable
    assert sco["id"] == guess_observable(canonical)["id"]


@pytest.mark.parametrize(("text", "algorithm"), [(MD5, "MD5"), (SHA1, "SHA-1"),
                                                 (SHA256, "SHA-256"),
                                                 (SHA256.upper(), "SHA-256")])
def test_hashes_by_length(text, algorithm):
    sco = guess_observable(text)
    assert sco["type"] == "file"
    assert list(sco["hashes"]) == [algorithm]
    assert sco["hashes"][algorithm].lower() == text.lower()


@pytest.mark.parametrize(
    ("text", "host"),
    [("http://evil-enrich.net/login?x=1", "evil-enrich.net"),
     ("https://Evil-Enrich.NET/a", "evil-enrich.net"),
     ("hxxp[:]//evil-enrich[.]net/b", "evil-enrich.net")],
)
def test_urls_including_defanged_ones(text, host):
    sco = guess_observable(text)
    assert sco["type"] == "url"
    assert sco["value"].startswith(("http://", "https://")) and host in sco["value"]
    assert "[" not in sco["value"]


@pytest.mark.parametrize("text", ["evil-enrich.net", "Evil-Enrich.NET", "evil-enrich[.]net",
                                  "evil-enrich.net."])
def test_domains_lowercased_and_refanged(text):
    sco = guess_observable(text)
    assert sco["type"] == "domain-name" and sco["value"] == "evil-enrich.net"


@pytest.mark.parametrize(
    "text",
    ["garbage value", "", "   ", "999.1.1.1", "1.2.3", "not_a_domain", "http://",
     "-bad-.com", "0cc175b9c0f1b6a831c399e26977266", "zz" * 16],
)
def test_garbage_is_refused(text):
    with pytest.raises(UnknownValueError) as error:
        guess_observable(text)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("text, limit", [("http://x.example/" + "a" * 70_000, 8192),
                                         ("a" * 2000 + ".example", 1024)])
def test_an_over_long_value_is_refused_as_too_long(text, limit):
    with pytest.raises(UnknownValueError) as error:
        guess_observable(text)
    assert str(error.value).endswith(f"is too long for any observable type: too_long: "
                                     f"{len(text)} characters (max {limit})")


def test_main_enrich_of_garbage_is_one_line_and_touches_nothing(capsys, data_dir):
    assert cli.main(["enrich", "8.8.4.4", "garbage value"]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("cti-assets enrich: ") and "'garbage value'" in line
    assert captured.out == ""
    assert not (data_dir / "store.sqlite").exists()  # not even the valid value was imported


# --- a real enrichment against the sandbox --------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    from cti_assets.sandbox import ProviderSandbox

    with ProviderSandbox(port=0) as sb:
        yield sb


@pytest.fixture
def live(sandbox, data_dir, monkeypatch):
    sandbox.reset()
    point_at_sandbox(monkeypatch, sandbox)
    return sandbox


def asked(sandbox, value):
    """Providers the sandbox was asked about `value`, with how many times each."""
    counts: dict[str, int] = {}
    for record in sandbox.requests:
        if record.observable == value:
            counts[record.provider] = counts.get(record.provider, 0) + 1
    return counts


def printed(out: str) -> dict[str, str]:
    """value -> explanation from enrich's `value: explanation` lines."""
    lines = {}
    for line in out.splitlines():
        value, sep, explanation = line.partition(": ")
        if sep and not line.startswith((" ", "=")):
            lines[value] = explanation
    return lines


def stored_scores(values):
    from cti_assets.defs.partitions import partition_key_for
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.storage.outputs import read_partition

    ids = {guess_observable(v)["id"] for v in values}
    seen = LocalStixStore().first_seen(ids)
    assert set(seen) == ids
    days = {partition_key_for(moment) for moment in seen.values()}
    frames = [read_partition("observable_scores", day) for day in sorted(days)]
    return {
        row["normalized_value"]: row
        for frame in frames
        for row in frame.to_dict("records")
        if row["stix_id"] in ids
    }


@pytest.mark.slow
def test_enrich_scores_new_values_and_a_second_enrich_refreshes_only_those(live, capsys):
    ip, domain = "45.83.73.20", "evil-enrich-now.net"
    live.set_profile(ip, "malicious")

    assert enrich_now([ip, domain]) == 0
    out = capsys.readouterr().out
    scores = stored_scores([ip, domain])
    assert set(scores) == {ip, domain}
    lines = printed(out)
    for value in (ip, domain):
        assert lines[value] == scores[value]["explanation"]
    assert scores[ip]["verdict"] == "malicious" and scores[ip]["score"] > 50
    first_ip = asked(live, ip)
    assert set(CHEAP_API_PROVIDERS) <= set(first_ip)  # triage may add expensive ones
    assert all(count == 1 for count in first_ip.values())
    assert asked(live, domain)

    live.reset_log()
    assert enrich_now([ip]) == 0
    out = capsys.readouterr().out
    # the same providers asked again about the value, once each; nothing else was asked
    assert asked(live, ip) == first_ip
    assert {r.observable for r in live.requests} == {ip}
    assert set(printed(out)) == {ip}
    assert stored_scores([ip])[ip]["score"] == scores[ip]["score"]


@pytest.mark.slow
def test_enrich_of_garbage_raises_a_cli_error_before_any_run(live):
    with pytest.raises(CliError):
        enrich_now(["45.83.73.30", "no such thing"])
    assert live.request_count() == 0


# --- bad settings, failed runs and no provider at all ----------------------------------------


def ours(err: str) -> list[str]:
    """enrich's own lines on stderr (not Dagster's log)."""
    return [line for line in err.splitlines() if line.startswith("cti-assets enrich: ")]


@pytest.mark.parametrize(("name", "value"), [("CTI_BATCH_ROWS", "abc"),
                                             ("CTI_UNMARKED_TLP", "TLP:PURPLE")])
def test_a_bad_setting_is_one_line_before_any_run(live, capsys, data_dir, monkeypatch, name,
                                                  value):
    monkeypatch.setenv(name, value)
    assert cli.main(["enrich", "45.83.73.40"]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith(f"cti-assets enrich: {name}") and repr(value) in line
    assert captured.out == ""
    assert not data_dir.exists()  # no store, no outputs, no Dagster home
    assert live.request_count() == 0


@pytest.mark.slow
def test_a_failed_run_prints_no_score_of_an_earlier_run(live, capsys, monkeypatch):
    from cti_assets import settings

    ip = "45.83.73.41"
    assert enrich_now([ip]) == 0
    assert ip in printed(capsys.readouterr().out)  # a score is stored for the day

    def broken() -> int:
        raise ValueError("merging is broken")

    monkeypatch.setattr(settings, "batch_rows", broken)  # merged_enrichment fails in the run
    assert enrich_now([ip]) == 1
    captured = capsys.readouterr()
    assert ip not in printed(captured.out)  # the earlier run's score is not shown as new
    [failed] = [line for line in captured.out.splitlines() if "FAILED" in line]
    assert failed == "  FAILED merged_enrichment: merging is broken"
    assert "Traceback" not in captured.out + captured.err  # the stack is in the run's log
    assert "Stack Trace" not in captured.out + captured.err
    [line] = ours(captured.err)
    assert " failed: no score shown for 45.83.73.41; " in line
    assert "(run not found)" not in line and str(settings.dagster_home_path()) in line


@pytest.mark.slow
def test_without_any_provider_key_enrich_says_so_and_fails(live, capsys, monkeypatch):
    from cti_assets.cli.demo import KEYED_PROVIDERS

    for provider in KEYED_PROVIDERS:
        monkeypatch.delenv(f"{provider}_API_KEY", raising=False)
    domain = "no-key-enrich.net"
    assert enrich_now([domain]) == 1
    captured = capsys.readouterr()
    assert "no provider API key is set (" in captured.out and "--sandbox-port" in captured.out
    assert domain in printed(captured.out)  # its score, from this run
    assert ours(captured.err) == [
        f"cti-assets enrich: no provider answered for {domain}: none of the providers that "
        "look it up has an API key set; set keys, or use --sandbox-port PORT"]
    assert live.request_count() == 0


@pytest.mark.slow
def test_a_value_the_store_holds_under_another_id_is_enriched_as_it_is_there(live, capsys):
    """The store holds the value marked TLP:RED under a random id: enrich makes no unmarked
    copy under the standard id (which the providers could then be sent), sends nothing, writes
    no score, and says why in one line."""
    from cti_assets.intake.observable import TLP2_MARKING_IDS
    from cti_assets.sources.local import LocalStixStore

    ip = "45.83.73.60"
    red = {"type": "ipv4-addr", "spec_version": "2.1", "value": ip,
           "id": "ipv4-addr--0f0c6f7e-1111-4a2b-9c3d-000000000060",
           "object_marking_refs": [TLP2_MARKING_IDS["TLP:RED"]]}
    store = LocalStixStore()
    store.write_bundle({"type": "bundle", "id": "bundle--0f0c6f7e-1111-4a2b-9c3d-000000000061",
                        "objects": [red]})
    before = store.counts_by_type()
    assert enrich_now([ip]) == 1
    captured = capsys.readouterr()
    assert asked(live, ip) == {}
    assert store.counts_by_type() == before  # no copy under guess_observable's standard id
    assert store.get(guess_observable(ip)["id"]) is None
    assert store.get(red["id"]) == red  # no score, no label written on it
    [line] = ours(captured.err)
    assert line.startswith(f"cti-assets enrich: no provider answered for {ip}: its TLP (TLP:RED)")
