"""The labelled evaluation set: provider answers an analyst has judged, one case per situation.

Each case is what the providers answer for one observable (documented shapes, realistic values,
built from the providers' documentation and public reporting on such infrastructure) with the
analyst's verdict, the score range the analyst accepts and why. `BENIGN_INFRA` cases must never
be called malicious; `FRESH_MALICIOUS` cases (active attacker infrastructure) never benign.
Providers a case leaves out were not configured (skipped: no key), as on a free-tier install.
"""

from __future__ import annotations

from dataclasses import dataclass

from cti_assets.providers.base import (
    ABUSEIPDB,
    CROWDSEC,
    GREYNOISE,
    INTERNETDB,
    MALWAREBAZAAR,
    OTX,
    SECURITYTRAILS,
    SHODAN,
    THREATFOX,
    URLHAUS,
    VIRUSTOTAL,
)
from tests.eval.answers import (
    Http,
    abuse,
    gn_community,
    gn_community_not_found,
    gn_v3,
    internetdb,
    internetdb_not_found,
    securitytrails,
    vt_domain,
    vt_file,
    vt_ip,
    vt_not_found,
    vt_url,
)
from tests.eval.community_answers import (
    bazaar,
    bazaar_none,
    crowdsec,
    crowdsec_none,
    otx,
    threatfox,
    threatfox_none,
    urlhaus_host,
    urlhaus_none,
    urlhaus_payload,
    urlhaus_url,
)

BENIGN_INFRA, FRESH_MALICIOUS, OTHER = "benign infrastructure", "fresh malicious", "other"
BANDS = {"malicious": (70, 100), "suspicious": (40, 69), "benign": (0, 20), "unknown": (0, 39)}


@dataclass(frozen=True)
class Case:
    name: str
    entity_type: str
    value: str
    answers: dict[str, Http]
    verdict: str
    why: str
    group: str = OTHER
    score: tuple[int, int] | None = None  # default: the verdict's band

    @property
    def score_range(self) -> tuple[int, int]:
        return self.score or BANDS[self.verdict]


def _ip(name, value, verdict, why, group=OTHER, score=None, **answers) -> Case:
    entity_type = "IPv6-Addr" if ":" in value else "IPv4-Addr"
    return Case(name, entity_type, value, _providers(answers), verdict, why, group, score)


def _providers(answers: dict[str, Http]) -> dict[str, Http]:
    names = {"vt": VIRUSTOTAL, "abuse": ABUSEIPDB, "gn": GREYNOISE, "idb": INTERNETDB,
             "shodan": SHODAN, "st": SECURITYTRAILS, "uh": URLHAUS, "tf": THREATFOX,
             "mb": MALWAREBAZAAR, "otx": OTX, "cs": CROWDSEC}
    return {names[key]: answer for key, answer in answers.items()}


def _name(name, value, verdict, why, group=OTHER, score=None, entity_type="Domain-Name",
          **answers) -> Case:
    return Case(name, entity_type, value, _providers(answers), verdict, why, group, score)


SHA = {
    "emotet": "c7f7bd5a0fbb5c8a1a6b2f4d6c9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a",
    "lockbit": "0d8b3fb8c3e26e3a91b6d6c9a5b1f0e2d4c6a8b0e2f4a6c8e0b2d4f6a8c0e2f4",
    "agenttesla": "5e3b2a1f0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f",
    "npp": "9f1a4b7c2d5e8f0a3b6c9d2e5f8a1b4c7d0e3f6a9b2c5d8e1f4a7b0c3d6e9f2a",
    "generic": "1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff0011",
    "unknown": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "asyncrat": "7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b",
    "heodo": "2f9c1b7e4a3d6f0e8c5b2a9d7f4e1c3b6a8d0f2e5c7b9a1d3f6e8c0b2a4d6f8e",
    "agenttesla-fresh": "6d1e8c3b5a7f9e2d4c6b8a0f1e3d5c7b9a2f4e6d8c0b1a3f5e7d9c2b4a6f8e0d",
    "nothing-known": "8e2c4a6f1d3b5e7c9a0f2d4b6e8c1a3f5d7b9e0c2a4f6d8b1e3c5a7f9d0b2e4c",
}

CASES: tuple[Case, ...] = (
    # --- IPv4: well-known resolvers, business services and research scanners ------------------
    _ip("google-dns", "8.8.8.8", "benign",
        "Google Public DNS: AbuseIPDB whitelists it, GreyNoise RIOT lists it; the reports are "
        "DNS replies that firewalls blamed on it", BENIGN_INFRA,
        vt=vt_ip("8.8.8.8", 0, harmless=63, reputation=540, as_owner="GOOGLE", asn=15169),
        abuse=abuse("8.8.8.8", 0, reports=38, users=16, last_days_ago=1, categories=[[14]],
                    whitelisted=True, usage="Content Delivery Network", isp="Google LLC",
                    domain="google.com"),
        gn=gn_community("8.8.8.8", riot=True, classification="benign", name="Google Public DNS")),
    _ip("google-dns-vt-noise", "8.8.4.4", "benign",
        "the issue's case: 5/94 engines list Google's resolver (DNS of malware resolves through "
        "it); the whitelist and RIOT outweigh one provider's engines", BENIGN_INFRA,
        vt=vt_ip("8.8.4.4", 5, harmless=58, reputation=212, as_owner="GOOGLE", asn=15169),
        abuse=abuse("8.8.4.4", 0, reports=21, users=9, last_days_ago=2, categories=[[14], [4]],
                    whitelisted=True, usage="Content Delivery Network", isp="Google LLC"),
        gn=gn_community("8.8.4.4", riot=True, classification="benign", name="Google Public DNS")),
    _ip("cloudflare-dns", "1.1.1.1", "benign",
        "Cloudflare's resolver: users report it by mistake every day (120 reports, 41 users), "
        "two engines list it; whitelisted and in RIOT", BENIGN_INFRA,
        vt=vt_ip("1.1.1.1", 2, harmless=60, reputation=120, as_owner="CLOUDFLARENET", asn=13335),
        abuse=abuse("1.1.1.1", 0, reports=120, users=41, last_days_ago=0.3,
                    categories=[[14], [18], [4]], whitelisted=True,
                    usage="Content Delivery Network", isp="APNIC and Cloudflare DNS Resolver"),
        gn=gn_community("1.1.1.1", riot=True, classification="benign", name="Cloudflare")),
    _ip("quad9", "9.9.9.9", "benign", "Quad9 resolver, whitelisted and in RIOT", BENIGN_INFRA,
        vt=vt_ip("9.9.9.9", 0, harmless=61, reputation=25, as_owner="QUAD9-AS-1", asn=19281),
        abuse=abuse("9.9.9.9", 0, reports=4, users=3, last_days_ago=10, categories=[[14]],
                    whitelisted=True, usage="Data Center/Web Hosting/Transit"),
        gn=gn_community("9.9.9.9", riot=True, classification="benign", name="Quad9")),
    _ip("opendns", "208.67.222.222", "benign", "Cisco OpenDNS resolver, whitelisted and in RIOT",
        BENIGN_INFRA,
        vt=vt_ip("208.67.222.222", 1, harmless=60, reputation=10, as_owner="OPENDNS"),
        abuse=abuse("208.67.222.222", 0, reports=6, users=5, last_days_ago=4,
                    categories=[[14]], whitelisted=True, usage="Data Center/Web Hosting/Transit"),
        gn=gn_community("208.67.222.222", riot=True, classification="benign",
                        name="Cisco OpenDNS")),
    _ip("m365-paid-riot", "52.96.91.34", "benign",
        "Microsoft 365 outbound mail (GreyNoise RIOT trust 1): spam reports of mail relayed "
        "for tenants reach confidence 100, but blocking it blocks Exchange Online", BENIGN_INFRA,
        vt=vt_ip("52.96.91.34", 1, harmless=57, as_owner="MICROSOFT-CORP-MSN-AS-BLOCK"),
        abuse=abuse("52.96.91.34", 100, reports=31, users=12, last_days_ago=0.5,
                    categories=[[11]], whitelisted=False, usage="Data Center/Web Hosting/Transit",
                    isp="Microsoft Corporation", domain="microsoft.com"),
        gn=gn_v3("52.96.91.34", riot=True, trust_level="1", service="Microsoft 365",
                 category="software")),
    _ip("m365-community-riot", "40.107.22.53", "benign",
        "Exchange Online Protection relay seen by the free GreyNoise API (riot true, no trust "
        "level): RIOT must apply on Community too", BENIGN_INFRA,
        vt=vt_ip("40.107.22.53", 0, harmless=59, as_owner="MICROSOFT-CORP-MSN-AS-BLOCK"),
        abuse=abuse("40.107.22.53", 100, reports=17, users=8, last_days_ago=1, categories=[[11]],
                    usage="Data Center/Web Hosting/Transit", isp="Microsoft Corporation"),
        gn=gn_community("40.107.22.53", riot=True, classification="benign",
                        name="Microsoft 365")),
    _ip("censys-scanner", "167.94.138.35", "benign",
        "Censys research scanner: GreyNoise benign, port-scan reports from hundreds of users, "
        "three engines; scanning everyone is not targeting us", BENIGN_INFRA,
        vt=vt_ip("167.94.138.35", 3, harmless=55, as_owner="CENSYS-ARIN-01"),
        abuse=abuse("167.94.138.35", 100, reports=1480, users=310, last_days_ago=0.1,
                    categories=[[14]], usage="Data Center/Web Hosting/Transit",
                    isp="Censys, Inc."),
        gn=gn_community("167.94.138.35", noise=True, classification="benign", name="Censys")),
    _ip("shodan-scanner", "198.20.69.74", "benign",
        "Shodan's crawler (GreyNoise v3 benign actor Shodan.io), reported for port scans and "
        "hacking by many users", BENIGN_INFRA,
        vt=vt_ip("198.20.69.74", 2, harmless=56, as_owner="SINGLEHOP-LLC"),
        abuse=abuse("198.20.69.74", 100, reports=830, users=205, last_days_ago=0.2,
                    categories=[[14], [15]], usage="Data Center/Web Hosting/Transit"),
        gn=gn_v3("198.20.69.74", noise=True, classification="benign", actor="Shodan.io",
                 tags=[("ShodanBot", "benign")])),
    _ip("cloudflare-cdn", "104.16.132.229", "benign",
        "Cloudflare CDN edge: customers' phishing pages get reported and flagged on the shared "
        "address; GreyNoise RIOT (Community) and AbuseIPDB's CDN usage type", BENIGN_INFRA,
        vt=vt_ip("104.16.132.229", 3, harmless=57, as_owner="CLOUDFLARENET", asn=13335),
        abuse=abuse("104.16.132.229", 4, reports=3, users=2, last_days_ago=12,
                    categories=[[7]], usage="Content Delivery Network", isp="Cloudflare, Inc."),
        gn=gn_community("104.16.132.229", riot=True, classification="benign", name="Cloudflare"),
        idb=internetdb("104.16.132.229", ports=[80, 443, 8080, 8443], tags=["cdn"])),
    _ip("cloudfront-edge", "13.224.53.12", "unknown",
        "Amazon CloudFront edge: shared CDN with nothing reported; shared is context, not a "
        "vouching, so unknown", BENIGN_INFRA,
        vt=vt_ip("13.224.53.12", 0, harmless=58, as_owner="AMAZON-02", asn=16509),
        abuse=abuse("13.224.53.12", 0, usage="Content Delivery Network", isp="Amazon.com"),
        idb=internetdb("13.224.53.12", ports=[80, 443], tags=["cdn", "cloud"])),
    _ip("googlebot", "66.249.66.1", "benign",
        "Googlebot crawler: two bad-web-bot reports, AbuseIPDB usage Search Engine Spider, "
        "GreyNoise RIOT Google", BENIGN_INFRA,
        vt=vt_ip("66.249.66.1", 0, harmless=60, reputation=3, as_owner="GOOGLE"),
        abuse=abuse("66.249.66.1", 0, reports=2, users=2, last_days_ago=40, categories=[[19]],
                    usage="Search Engine Spider", isp="Google LLC"),
        gn=gn_community("66.249.66.1", riot=True, classification="benign", name="Google")),
    _ip("akamai-trust2", "23.215.0.136", "benign",
        "Akamai edge, RIOT trust level 2; one engine lists it", BENIGN_INFRA,
        vt=vt_ip("23.215.0.136", 1, harmless=58, as_owner="AKAMAI-AS"),
        abuse=abuse("23.215.0.136", 0, usage="Content Delivery Network", isp="Akamai"),
        gn=gn_v3("23.215.0.136", riot=True, trust_level="2", service="Akamai", category="cdn")),
    # --- IPv4: attacker infrastructure ------------------------------------------------------------
    _ip("cobalt-strike-c2", "45.95.147.236", "malicious",
        "Cobalt Strike team server on a VPS: 14 engines, 28 reporters in the last day for web "
        "attacks and hacking, team-server port 50050 open; targeted, so GreyNoise never saw it",
        FRESH_MALICIOUS, score=(80, 100),
        vt=vt_ip("45.95.147.236", 14, as_owner="Alexhost SRL"),
        abuse=abuse("45.95.147.236", 100, reports=62, users=28, last_days_ago=1,
                    categories=[[21, 15], [18, 22]], isp="Alexhost SRL"),
        gn=gn_community_not_found("45.95.147.236"),
        idb=internetdb("45.95.147.236", ports=[80, 443, 50050])),
    _ip("mirai-bot", "61.52.178.201", "malicious",
        "Mirai-infected router scanning telnet: GreyNoise malicious, 350 reporters, compromised "
        "tag, six engines", FRESH_MALICIOUS, score=(80, 100),
        vt=vt_ip("61.52.178.201", 6, as_owner="CHINA UNICOM China169 Backbone"),
        abuse=abuse("61.52.178.201", 100, reports=1200, users=350, last_days_ago=0.2,
                    categories=[[14, 23], [18, 22]], usage="Fixed Line ISP"),
        gn=gn_community("61.52.178.201", noise=True, classification="malicious"),
        idb=internetdb("61.52.178.201", ports=[23, 2323], tags=["compromised"])),
    _ip("ssh-bruteforcer", "218.92.0.112", "malicious",
        "SSH brute-forcer reported by 900 users today, GreyNoise malicious, nine engines",
        FRESH_MALICIOUS, score=(80, 100),
        vt=vt_ip("218.92.0.112", 9, as_owner="CHINANET-BACKBONE"),
        abuse=abuse("218.92.0.112", 100, reports=4000, users=900, last_days_ago=0.1,
                    categories=[[18, 22]], usage="Fixed Line ISP"),
        gn=gn_community("218.92.0.112", noise=True, classification="malicious")),
    _ip("emotet-c2", "51.75.33.120", "malicious",
        "Emotet epoch C2: twelve engines and exploited-host reports from seven users this week",
        FRESH_MALICIOUS,
        vt=vt_ip("51.75.33.120", 12, as_owner="OVH SAS"),
        abuse=abuse("51.75.33.120", 57, reports=9, users=7, last_days_ago=3,
                    categories=[[20]], isp="OVH SAS"),
        gn=gn_community_not_found("51.75.33.120")),
    _ip("exploited-router", "177.54.145.9", "malicious",
        "exploited host attacking IoT: 22 reporters, GreyNoise malicious, compromised tag and "
        "a dozen exposed CVEs", FRESH_MALICIOUS,
        vt=vt_ip("177.54.145.9", 2, as_owner="Claro S.A."),
        abuse=abuse("177.54.145.9", 75, reports=40, users=22, last_days_ago=2,
                    categories=[[20], [23]], usage="Fixed Line ISP"),
        gn=gn_community("177.54.145.9", noise=True, classification="malicious"),
        idb=internetdb("177.54.145.9", ports=[22, 80, 7547], tags=["compromised"],
                       vulns=[f"CVE-2017-{n}" for n in range(17215, 17227)])),
    _ip("phishing-vps", "193.233.20.14", "malicious",
        "phishing kit host: seven engines plus phishing reports from four users",
        FRESH_MALICIOUS,
        vt=vt_ip("193.233.20.14", 7, as_owner="Hostkey B.v."),
        abuse=abuse("193.233.20.14", 35, reports=5, users=4, last_days_ago=4, categories=[[7]]),
        gn=gn_community_not_found("193.233.20.14")),
    _ip("one-report-one-user", "91.203.5.9", "unknown",
        "the issue's case: abuse confidence 100 from a single report by a single user two days "
        "ago, nothing else: not enough to call anything", score=(5, 39),
        vt=vt_ip("91.203.5.9", 0, harmless=60, as_owner="ITL LLC"),
        abuse=abuse("91.203.5.9", 100, reports=1, users=1, last_days_ago=2, categories=[[18]]),
        gn=gn_community_not_found("91.203.5.9")),
    _ip("tor-exit-attacking", "185.220.101.34", "malicious",
        "Tor exit relaying attacks: 600 reporters, GreyNoise malicious, eight engines (the "
        "Tor label itself adds nothing)",
        vt=vt_ip("185.220.101.34", 8, as_owner="Zwiebelfreunde e.V.", tags=["tor"]),
        abuse=abuse("185.220.101.34", 100, reports=2500, users=600, last_days_ago=0.05,
                    categories=[[18, 22], [15], [21]], tor=True,
                    usage="Data Center/Web Hosting/Transit"),
        gn=gn_community("185.220.101.34", noise=True, classification="malicious")),
    _ip("tor-exit-quiet", "185.220.100.240", "unknown",
        "Tor exit with a few hacking reports a month ago: an anonymiser, labelled, not malice",
        vt=vt_ip("185.220.100.240", 0, harmless=57, tags=["tor"]),
        abuse=abuse("185.220.100.240", 18, reports=4, users=3, last_days_ago=30,
                    categories=[[15]], tor=True),
        gn=gn_community_not_found("185.220.100.240")),
    _ip("residential-clean", "81.2.69.142", "benign",
        "home broadband address: clean on VirusTotal with a positive reputation, never "
        "reported", score=(0, 20),
        vt=vt_ip("81.2.69.142", 0, harmless=60, reputation=2, as_owner="Andrews & Arnold Ltd"),
        abuse=abuse("81.2.69.142", 0, usage="Fixed Line ISP"),
        gn=gn_community_not_found("81.2.69.142"),
        idb=internetdb_not_found()),
    _ip("opportunistic-scanner", "45.148.10.95", "unknown",
        "unattributed scanner (GreyNoise noise, unknown) with port-scan reports: internet "
        "background noise, not a targeted threat", score=(10, 39),
        vt=vt_ip("45.148.10.95", 0, harmless=58),
        abuse=abuse("45.148.10.95", 25, reports=12, users=9, last_days_ago=1,
                    categories=[[14]]),
        gn=gn_community("45.148.10.95", noise=True, classification="unknown")),
    _ip("bulletproof-vt-only", "5.188.206.18", "suspicious",
        "bulletproof hosting address four engines list, nothing else reported",
        vt=vt_ip("5.188.206.18", 4, as_owner="Petersburg Internet Network ltd."),
        abuse=abuse("5.188.206.18", 0), gn=gn_community_not_found("5.188.206.18")),
    _ip("cloud-vm-two-engines", "3.91.22.140", "unknown",
        "EC2 instance two engines list: a weak signal on a cloud address",
        vt=vt_ip("3.91.22.140", 2, as_owner="AMAZON-AES", asn=14618),
        abuse=abuse("3.91.22.140", 0, isp="Amazon.com, Inc."),
        gn=gn_community_not_found("3.91.22.140"),
        idb=internetdb("3.91.22.140", ports=[22, 80], tags=["cloud"])),
    _ip("old-reports", "104.248.51.77", "unknown",
        "droplet reported by two users eighty days ago; AbuseIPDB's own confidence already "
        "fell to 0",
        vt=vt_ip("104.248.51.77", 0, harmless=59, as_owner="DIGITALOCEAN-ASN"),
        abuse=abuse("104.248.51.77", 0, reports=3, users=2, last_days_ago=80,
                    categories=[[18, 22]])),
    _ip("greynoise-malicious-only", "80.94.95.226", "suspicious",
        "GreyNoise saw it attacking its sensors; no other provider knows it: one witness",
        vt=vt_ip("80.94.95.226", 0, harmless=59), abuse=abuse("80.94.95.226", 0),
        gn=gn_community("80.94.95.226", noise=True, classification="malicious")),
    _ip("private-address", "10.20.30.40", "benign",
        "RFC 1918 address: never looked up, never a threat indicator", score=(0, 0)),
    _ip("paid-gn-malicious-tags", "194.26.29.102", "malicious",
        "GreyNoise v3: malicious with exploitation tags that recommend blocking, plus "
        "web-attack reports from 15 users", FRESH_MALICIOUS,
        abuse=abuse("194.26.29.102", 88, reports=44, users=15, last_days_ago=0.4,
                    categories=[[21], [15]]),
        gn=gn_v3("194.26.29.102", noise=True, classification="malicious",
                 tags=[("Apache Struts RCE Attempt", "malicious"), ("Web Crawler", "unknown")])),
    # --- IPv6 ------------------------------------------------------------------------------------
    _ip("google-dns-v6", "2001:4860:4860::8888", "benign",
        "Google Public DNS over IPv6, whitelisted", BENIGN_INFRA,
        vt=vt_ip("2001:4860:4860::8888", 0, harmless=60, reputation=30, as_owner="GOOGLE"),
        abuse=abuse("2001:4860:4860::8888", 0, reports=3, users=2, last_days_ago=9,
                    whitelisted=True, usage="Content Delivery Network")),
    _ip("cloudflare-dns-v6", "2606:4700:4700::1111", "benign",
        "Cloudflare's resolver over IPv6: one engine, whitelisted", BENIGN_INFRA,
        vt=vt_ip("2606:4700:4700::1111", 1, harmless=59, reputation=5, as_owner="CLOUDFLARENET"),
        abuse=abuse("2606:4700:4700::1111", 0, reports=11, users=6, last_days_ago=2,
                    whitelisted=True, usage="Content Delivery Network")),
    _ip("v6-bruteforcer", "2a01:4f8:c17:2d1a::1", "malicious",
        "Hetzner IPv6 host brute-forcing SSH: 75 reporters today and five engines",
        FRESH_MALICIOUS,
        vt=vt_ip("2a01:4f8:c17:2d1a::1", 5, as_owner="Hetzner Online GmbH"),
        abuse=abuse("2a01:4f8:c17:2d1a::1", 100, reports=210, users=75, last_days_ago=0.5,
                    categories=[[18, 22]])),
    _ip("v6-unknown", "2a02:2f0e:5f0:a00::12", "unknown",
        "residential IPv6 address nobody knows",
        vt=vt_not_found("ip_address", "2a02:2f0e:5f0:a00::12"),
        abuse=abuse("2a02:2f0e:5f0:a00::12", 0, usage="Mobile ISP")),
    # --- Domains ---------------------------------------------------------------------------------
    _name("google", "google.com", "benign", "rank 1 everywhere, registered in 1997",
          BENIGN_INFRA,
          vt=vt_domain("google.com", 0, harmless=68, reputation=480, created_days_ago=10400,
                       ranks={"Majestic": 1, "Cisco Umbrella": 1, "Tranco": 1},
                       categories={"Forcepoint ThreatSeeker": "search engines and portals"}),
          st=securitytrails("google.com", rank=1, subdomains=9000)),
    _name("stackoverflow", "stackoverflow.com", "benign",
          "an ordinary compound name (the random-label rule fired on it)", BENIGN_INFRA,
          vt=vt_domain("stackoverflow.com", 0, harmless=66, reputation=22, created_days_ago=6400,
                       ranks={"Tranco": 61, "Majestic": 72},
                       categories={"Forcepoint ThreatSeeker": "information technology"})),
    _name("cloudflare-dns-name", "cloudflare-dns.com", "benign",
          "Cloudflare's DoH name: compound, hyphenated, popular", BENIGN_INFRA,
          vt=vt_domain("cloudflare-dns.com", 0, harmless=65, reputation=8, created_days_ago=2950,
                       ranks={"Tranco": 310, "Cisco Umbrella": 95})),
    _name("microsoft-one-engine", "microsoft.com", "benign",
          "one noisy engine on a top-10 domain", BENIGN_INFRA,
          vt=vt_domain("microsoft.com", 1, harmless=66, reputation=90, created_days_ago=12000,
                       ranks={"Tranco": 8, "Majestic": 6})),
    _name("jsdelivr-ten-engines", "cdn.jsdelivr.net", "benign",
          "the issue's case: a top-ranked CDN name ten engines flag because it serves some "
          "malicious packages; VirusTotal alone cannot make shared infrastructure malicious",
          BENIGN_INFRA, entity_type="Hostname",
          vt=vt_domain("cdn.jsdelivr.net", 10, harmless=55, created_days_ago=4300,
                       ranks={"Tranco": 140, "Cisco Umbrella": 210})),
    _name("fresh-phishing", "secure-paypal-login-verify.com", "malicious",
          "two days old, six engines and phishing categories, embeds the PayPal brand",
          FRESH_MALICIOUS, score=(80, 100),
          vt=vt_domain("secure-paypal-login-verify.com", 6, created_days_ago=2,
                       registrar="NameSilo, LLC",
                       categories={"Forcepoint ThreatSeeker": "phishing and other frauds",
                                   "Sophos": "phishing"}),
          st=securitytrails("secure-paypal-login-verify.com", first_seen_days_ago=2)),
    _name("bank-typosquat", "barclaays.com", "suspicious",
          "the issue's case: a three-day-old typosquat of Barclays nobody flagged yet; the URL "
          "scanners' 'harmless' means only 'not seen'", FRESH_MALICIOUS,
          vt=vt_domain("barclaays.com", 0, harmless=62, created_days_ago=3,
                       registrar="Hostinger, UAB")),
    _name("idn-homograph", "xn--pple-43d.com", "suspicious",
          "Cyrillic 'а' in аpple.com, registered five days ago", FRESH_MALICIOUS,
          vt=vt_domain("xn--pple-43d.com", 0, harmless=61, created_days_ago=5)),
    _name("dga-young", "xjwqkzvbprtl.com", "malicious",
          "DGA-style name registered yesterday, three engines already", FRESH_MALICIOUS,
          vt=vt_domain("xjwqkzvbprtl.com", 3, created_days_ago=1)),
    _name("dga-unregistered", "qzxkvbnwtrplmh.net", "unknown",
          "random-looking name VirusTotal never saw: a hint, not evidence", score=(10, 39),
          vt=vt_not_found("domain", "qzxkvbnwtrplmh.net")),
    _name("established-c2", "windowsupdate-cdn-sync.com", "malicious",
          "C2 domain known for a year: 15 engines, malware categories, negative reputation",
          score=(85, 100),
          vt=vt_domain("windowsupdate-cdn-sync.com", 15, created_days_ago=400, reputation=-34,
                       votes=(0, 8),
                       categories={"Forcepoint ThreatSeeker": "malicious web sites",
                                   "BitDefender": "malware"})),
    _name("adware-category", "searchmanager-tools.com", "unknown",
          "the issue's case: one engine and an adware category ('spyware and adware' is not "
          "spyware)",
          vt=vt_domain("searchmanager-tools.com", 1, created_days_ago=1500,
                       categories={"Sophos": "spyware and adware"})),
    _name("parked-old", "bluemeadowfarms.com", "benign",
          "a parked domain registered 2012, clean: old and seen", score=(0, 20),
          vt=vt_domain("bluemeadowfarms.com", 0, harmless=64, created_days_ago=5000,
                       categories={"Forcepoint ThreatSeeker": "parked domain"})),
    _name("rehosted-old", "harborviewdental.com", "benign",
          "a dentist's 2014 domain moved to a new host last week: its DNS records are new, "
          "its registration is not",
          vt=vt_domain("harborviewdental.com", 0, harmless=64, created_days_ago=4200),
          st=securitytrails("harborviewdental.com", first_seen_days_ago=5)),
    _name("duckdns-c2", "kq7v2h.duckdns.org", "suspicious",
          "dynamic-DNS name four engines list (often RAT C2, never confirmed here)",
          entity_type="Hostname",
          vt=vt_domain("kq7v2h.duckdns.org", 4, created_days_ago=200)),
    _name("young-unflagged", "lakesidecoffeeroasters.shop", "unknown",
          "a ten-day-old shop nobody flagged: young is a reason to look, not a verdict",
          score=(10, 39),
          vt=vt_domain("lakesidecoffeeroasters.shop", 0, harmless=62, created_days_ago=10)),
    # --- Hostnames --------------------------------------------------------------------------------
    _name("m365-login", "login.microsoftonline.com", "benign", "Microsoft's sign-in endpoint",
          BENIGN_INFRA, entity_type="Hostname",
          vt=vt_domain("login.microsoftonline.com", 0, harmless=66, reputation=12,
                       ranks={"Cisco Umbrella": 14})),
    _name("cloudfront-distribution", "d3k2l9xq8f7a1b.cloudfront.net", "unknown",
          "a CloudFront distribution three engines flag: the tenant is unknown, the name shared",
          BENIGN_INFRA, entity_type="Hostname",
          vt=vt_domain("d3k2l9xq8f7a1b.cloudfront.net", 3)),
    _name("ec2-hostname", "ec2-3-91-22-140.compute-1.amazonaws.com", "unknown",
          "an EC2 public DNS name: cloud context, one engine", BENIGN_INFRA,
          entity_type="Hostname",
          vt=vt_domain("ec2-3-91-22-140.compute-1.amazonaws.com", 1)),
    _name("docusign-phish-host", "mail.secure-docusign-review.com", "malicious",
          "four days old, five engines, phishing category, DocuSign brand", FRESH_MALICIOUS,
          entity_type="Hostname",
          vt=vt_domain("mail.secure-docusign-review.com", 5, created_days_ago=4,
                       categories={"Sophos": "phishing"})),
    _name("telemetry-c2-host", "cdn-update.winsvc-telemetry.top", "malicious",
          "twelve-day-old .top C2 with eight engines and a command-and-control category",
          FRESH_MALICIOUS, entity_type="Hostname",
          vt=vt_domain("cdn-update.winsvc-telemetry.top", 8, created_days_ago=12,
                       categories={"Forcepoint ThreatSeeker": "command and control"})),
    # --- URLs -------------------------------------------------------------------------------------
    _name("mirai-payload-unflagged", "http://103.145.13.88:8080/bins/mips", "suspicious",
          "the issue's case: a Mirai payload path on a bare IP and port, submitted hours ago; "
          "0 engines only means nobody analysed it yet", FRESH_MALICIOUS, entity_type="Url",
          vt=vt_url("http://103.145.13.88:8080/bins/mips", 0, harmless=70,
                    first_submitted_days_ago=0.2)),
    _name("mirai-payload-flagged", "http://103.145.13.88/bins/x86", "malicious",
          "the same payload path, nine engines and a Mirai threat name", FRESH_MALICIOUS,
          entity_type="Url",
          vt=vt_url("http://103.145.13.88/bins/x86", 9, threat_names=["Mirai"],
                    first_submitted_days_ago=1)),
    _name("phishing-url", "https://secure-paypal-login-verify.com/signin/", "malicious",
          "phishing kit page: eight engines and phishing categories, PayPal brand in the name",
          FRESH_MALICIOUS, entity_type="Url",
          vt=vt_url("https://secure-paypal-login-verify.com/signin/", 8,
                    categories={"Sophos": "phishing", "Forcepoint ThreatSeeker":
                                "phishing and other frauds"})),
    _name("google-search-url", "https://www.google.com/search?q=weather", "benign",
          "a search page on the most popular name", BENIGN_INFRA, entity_type="Url",
          vt=vt_url("https://www.google.com/search?q=weather", 0, harmless=72,
                    first_submitted_days_ago=2500, times_submitted=4000)),
    _name("microsoft-download-url", "https://www.microsoft.com/en-us/download/details.aspx",
          "benign", "Microsoft's download centre page", BENIGN_INFRA, entity_type="Url",
          vt=vt_url("https://www.microsoft.com/en-us/download/details.aspx", 0, harmless=71,
                    first_submitted_days_ago=3000, times_submitted=900)),
    _name("credentials-url", "http://admin:admin@45.137.21.9/upload.php", "suspicious",
          "credentials in a URL to a bare IP, three engines",
          entity_type="Url",
          vt=vt_url("http://admin:admin@45.137.21.9/upload.php", 3)),
    _name("brand-in-url", "https://wellsfargo-alerts-verify.com/login", "suspicious",
          "Wells Fargo brand in a name VirusTotal calls harmless (unseen): suspicious",
          FRESH_MALICIOUS, entity_type="Url",
          vt=vt_url("https://wellsfargo-alerts-verify.com/login", 0, harmless=70,
                    first_submitted_days_ago=0.5)),
    _name("ordinary-url", "https://www.kingarthurbaking.com/recipes/sourdough-bread-recipe",
          "unknown", "an ordinary recipe page: 'harmless' from URL scanners is not a vouching",
          entity_type="Url", score=(0, 20),
          vt=vt_url("https://www.kingarthurbaking.com/recipes/sourdough-bread-recipe", 0,
                    harmless=71, first_submitted_days_ago=600, times_submitted=3)),
    _name("url-not-found", "https://portal.lakesidecoffeeroasters.shop/a/b", "unknown",
          "a URL VirusTotal never saw", entity_type="Url",
          vt=vt_not_found("url", "x")),
    # --- Files ------------------------------------------------------------------------------------
    _name("emotet-dll", SHA["emotet"], "malicious", "Emotet loader, 58 of 76 engines",
          entity_type="StixFile", score=(90, 100),
          vt=vt_file(SHA["emotet"], 58, label="trojan.emotet/heodo", names=["invoice.dll"])),
    _name("lockbit", SHA["lockbit"], "malicious", "LockBit 3.0 encryptor, 62 engines",
          entity_type="StixFile", score=(90, 100),
          vt=vt_file(SHA["lockbit"], 62, label="ransomware.lockbit/blackmatter")),
    _name("agenttesla", SHA["agenttesla"], "malicious",
          "Agent Tesla stealer, twelve engines two days after first submission",
          entity_type="StixFile",
          vt=vt_file(SHA["agenttesla"], 12, label="trojan.agenttesla/msil")),
    _name("asyncrat-few", SHA["asyncrat"], "suspicious",
          "AsyncRAT build five engines detect so far", entity_type="StixFile",
          vt=vt_file(SHA["asyncrat"], 5, label="trojan.asyncrat/msil")),
    _name("clean-installer", SHA["npp"], "unknown",
          "Notepad++ installer: no engine detects it (files have no 'harmless' vouching)",
          entity_type="StixFile", score=(0, 20),
          vt=vt_file(SHA["npp"], 0, names=["npp.8.6.4.Installer.x64.exe"])),
    _name("generic-two", SHA["generic"], "unknown",
          "two generic heuristic detections only", entity_type="StixFile",
          vt=vt_file(SHA["generic"], 2, label="trojan.generic")),
    _name("file-not-found", SHA["unknown"], "unknown", "a hash VirusTotal never saw",
          entity_type="StixFile", vt=vt_not_found("file", SHA["unknown"])),
    # --- Issue 19: URLhaus, ThreatFox, MalwareBazaar, OTX, CrowdSec ------------------------------
    # ThreatFox lists it as a QakBot C2 (confidence 100, seen yesterday); CrowdSec's agents see it
    # attacking; OTX pulses name QakBot: three independent witnesses (abuse.ch, CrowdSec, OTX).
    _ip("qakbot-c2-threatfox", "94.232.249.106", "malicious",
        "QakBot botnet C2 on a bulletproof VPS: ThreatFox confidence 100 seen yesterday, "
        "CrowdSec malicious, four OTX pulses naming QakBot", FRESH_MALICIOUS, score=(85, 100),
        tf=threatfox("94.232.249.106:443", ioc_type="ip:port", threat_type="botnet_cc",
                     malware="win.qakbot", printable="QakBot", alias="Qbot,Quakbot",
                     confidence=100, first_days_ago=3, last_days_ago=1, tags=["QakBot", "c2"]),
        cs=crowdsec("94.232.249.106", reputation="malicious",
                    behaviors=["http:exploit", "tcp:scan"], threat=4),
        otx=otx("94.232.249.106", "IPv4", pulses=[{"families": ["QakBot"], "days_ago": d}
                                                  for d in (1, 2, 5, 9)]),
        abuse=abuse("94.232.249.106", 0), gn=gn_community_not_found("94.232.249.106")),
    # A fresh Cobalt Strike team server: nobody reports it to AbuseIPDB (it does not scan),
    # but ThreatFox (75) and two OTX pulses naming Cobalt Strike agree: two witnesses.
    _ip("cobalt-strike-teamserver", "45.137.21.9", "malicious",
        "Cobalt Strike team server: ThreatFox botnet_cc confidence 75 five days ago, two OTX "
        "pulses naming Cobalt Strike; silent on AbuseIPDB and GreyNoise as C2s are",
        FRESH_MALICIOUS,
        tf=threatfox("45.137.21.9:8443", ioc_type="ip:port", threat_type="botnet_cc",
                     malware="win.cobalt_strike", printable="Cobalt Strike",
                     alias="Agentemis,BEACON,CobaltStrike", confidence=75, first_days_ago=5),
        otx=otx("45.137.21.9", "IPv4", pulses=[{"families": ["Cobalt Strike"], "days_ago": 4},
                                               {"families": ["Cobalt Strike"], "days_ago": 5}]),
        abuse=abuse("45.137.21.9", 0), gn=gn_community_not_found("45.137.21.9"),
        cs=crowdsec_none()),
    # CrowdSec's bouncers and AbuseIPDB's reporters both see the SSH brute force: two witnesses.
    _ip("ssh-bruteforcer-crowdsec", "61.177.172.140", "malicious",
        "SSH brute forcer: CrowdSec malicious (ssh:bruteforce), AbuseIPDB 100 from 300 users",
        FRESH_MALICIOUS,
        cs=crowdsec("61.177.172.140", reputation="malicious", behaviors=["ssh:bruteforce"],
                    threat=5),
        abuse=abuse("61.177.172.140", 100, reports=1900, users=300, last_days_ago=0.2,
                    categories=[[18, 22]], usage="Fixed Line ISP")),
    # CrowdSec alone calls it suspicious (an HTTP scanner): one witness, a weak one.
    _ip("crowdsec-suspicious-scanner", "103.145.13.88", "unknown",
        "only CrowdSec, suspicious for HTTP scanning: one weak witness is not enough",
        score=(0, 39),
        cs=crowdsec("103.145.13.88", reputation="suspicious", behaviors=["http:scan"], threat=2),
        abuse=abuse("103.145.13.88", 0), tf=threatfox_none()),
    # Google's resolver sits in hundreds of OTX pulses (malware resolves through it); OTX itself
    # whitelists it, CrowdSec says safe, AbuseIPDB whitelists it: nothing malicious may stand.
    _ip("google-dns-in-otx-pulses", "8.8.4.4", "benign",
        "Google Public DNS in 40 OTX pulses listing lookups of malware: OTX's own validation "
        "whitelists it, CrowdSec calls it safe (false positive: public DNS)", BENIGN_INFRA,
        otx=otx("8.8.4.4", "IPv4", whitelisted="Whitelisted indicator",
                pulses=[{"families": ["Emotet"], "days_ago": d} for d in range(1, 41)]),
        cs=crowdsec("8.8.4.4", reputation="safe", false_positives=["public_dns:google"]),
        abuse=abuse("8.8.4.4", 0, reports=21, users=9, last_days_ago=2, categories=[[14]],
                    whitelisted=True, usage="Content Delivery Network"),
        tf=threatfox_none()),
    # A Cloudflare anycast address: five OTX pulses (phishing behind Cloudflare) but CrowdSec's
    # false-positive list names the CDN: shared infrastructure, never malicious on one witness.
    _ip("cloudflare-anycast-otx", "104.21.45.12", "unknown",
        "Cloudflare anycast address fronting many sites, some phishing: five OTX pulses, "
        "CrowdSec known with false positive cdn:cloudflare", BENIGN_INFRA, score=(0, 39),
        otx=otx("104.21.45.12", "IPv4", pulses=[{"name": "Phishing kit", "days_ago": d}
                                                for d in (3, 8, 20, 40, 60)]),
        cs=crowdsec("104.21.45.12", reputation="known", false_positives=["cdn:cloudflare"]),
        abuse=abuse("104.21.45.12", 0, usage="Content Delivery Network")),
    # Mozi payload URL online on an infected router: URLhaus online (tags mozi, elf) and the
    # offline context (bare IP host, high port, payload path) agree.
    _name("mozi-url-online", "http://182.117.29.54:45123/i", "malicious",
          "Mozi botnet payload served right now from an infected router (URLhaus online, "
          "signature Mozi)", FRESH_MALICIOUS, entity_type="Url",
          uh=urlhaus_url("http://182.117.29.54:45123/i", status="online",
                         tags=["32-bit", "elf", "mips", "Mozi"], signature="Mozi",
                         file_type="elf", added_days_ago=0.5),
          tf=threatfox_none()),
    # Emotet document URL on a hacked site, taken down months ago: URLhaus offline alone.
    _name("emotet-url-offline", "https://shop.bakery-hansen.de/wp-content/uploads/inv_0472.doc",
          "suspicious", "Emotet maldoc URL taken down eight months ago: URLhaus offline only; "
          "the shop still exists", entity_type="Url",
          uh=urlhaus_url("https://shop.bakery-hansen.de/wp-content/uploads/inv_0472.doc",
                         status="offline", tags=["doc", "emotet", "epoch4"], signature="Heodo",
                         file_type="doc", added_days_ago=240),
          vt=vt_url("https://shop.bakery-hansen.de/wp-content/uploads/inv_0472.doc", 2,
                    first_submitted_days_ago=240)),
    # GitHub's raw content host carries hundreds of malware URLs in URLhaus (some online) and
    # OTX pulses: it is where malware is stored, not what is malicious. URLhaus (abused host)
    # and OTX together do not reach what lifts the popularity cap.
    _name("github-raw-in-urlhaus", "raw.githubusercontent.com", "benign",
          "GitHub raw content: URLhaus lists 900 URLs on it (12 online), OTX pulses too; a "
          "popular shared host, never malicious", BENIGN_INFRA, entity_type="Hostname",
          uh=urlhaus_host("raw.githubusercontent.com", online=12, offline=40, url_count=900,
                          tags=["exe", "AsyncRAT"], first_days_ago=1500),
          otx=otx("raw.githubusercontent.com", "hostname",
                  pulses=[{"families": ["AsyncRAT"], "days_ago": d} for d in (2, 9, 30)]),
          vt=vt_domain("raw.githubusercontent.com", 1, harmless=66,
                       ranks={"Cisco Umbrella": 310})),
    # A small business site hacked once: two URLhaus URLs, both offline; VirusTotal clean.
    _name("cleaned-wordpress-host", "hansen-elektro.de", "unknown",
          "a plumber's WordPress site that served two payloads a year ago, cleaned since "
          "(URLhaus offline only, VirusTotal clean)",
          uh=urlhaus_host("hansen-elektro.de", online=0, offline=2, first_days_ago=380),
          vt=vt_domain("hansen-elektro.de", 0, harmless=62, created_days_ago=4200)),
    # An APT domain: six OTX pulses naming the adversary, a young registration, four engines.
    _name("apt28-otx-domain", "microsoft-update-center.online", "malicious",
          "APT28 credential-phishing domain: six OTX pulses naming APT28, registered twelve days "
          "ago, four engines", FRESH_MALICIOUS,
          otx=otx("microsoft-update-center.online", "domain",
                  pulses=[{"adversary": "APT28", "families": ["Zebrocy"], "days_ago": d}
                          for d in (2, 3, 5, 6, 8, 11)]),
          vt=vt_domain("microsoft-update-center.online", 4, created_days_ago=12),
          tf=threatfox_none(), uh=urlhaus_none()),
    # A stale, low-confidence ThreatFox domain entry: a year old, confidence 25.
    _name("threatfox-stale-low-confidence", "update-checker.xyz", "benign",
          "ThreatFox listed it a year ago with confidence 25 (unverified), nothing since; a "
          "name registered 900 days ago that 58 engines call harmless: the stale entry, "
          "halved four times over, does not outweigh that",
          tf=threatfox("update-checker.xyz", ioc_type="domain", threat_type="botnet_cc",
                       malware="win.unknown", printable="Unknown malware", confidence=25,
                       first_days_ago=400),
          vt=vt_domain("update-checker.xyz", 0, harmless=58, created_days_ago=900)),
    # One anonymous OTX pulse listing a domain among thousands: weak on its own.
    _name("otx-single-pulse", "stats-collector.net", "benign",
          "one OTX pulse (an indicator dump) against a seven-year-old name 60 engines call "
          "harmless: one weak listing does not lift VirusTotal's vouching",
          otx=otx("stats-collector.net", "domain", pulses=[{"name": "IOC dump", "days_ago": 30}]),
          vt=vt_domain("stats-collector.net", 0, harmless=60, created_days_ago=2500)),
    # The Emotet loader as every abuse.ch list knows it: MalwareBazaar Heodo, URLhaus payload,
    # ThreatFox payload. One curator: one witness, but a strong one.
    _name("emotet-in-malwarebazaar", SHA["heodo"], "malicious",
          "Emotet loader: MalwareBazaar signature Heodo, URLhaus payload, ThreatFox payload "
          "(one witness, abuse.ch), VirusTotal not yet", FRESH_MALICIOUS, entity_type="StixFile",
          score=(90, 100),
          mb=bazaar(SHA["heodo"], signature="Heodo", file_type="dll", tags=["Emotet", "Heodo"]),
          uh=urlhaus_payload(SHA["heodo"], signature="Heodo", file_type="dll"),
          tf=threatfox(SHA["heodo"], ioc_type="sha256_hash", threat_type="payload",
                       malware="win.emotet", printable="Emotet", alias="Geodo,Heodo",
                       confidence=100),
          vt=vt_not_found("file", SHA["heodo"])),
    # A stealer sample only MalwareBazaar has yet (submitted from a mail filter an hour ago).
    _name("agenttesla-bazaar-only", SHA["agenttesla-fresh"], "malicious",
          "Agent Tesla from a phishing mail an hour ago: MalwareBazaar knows it, nobody else yet",
          FRESH_MALICIOUS, entity_type="StixFile",
          mb=bazaar(SHA["agenttesla-fresh"], signature="AgentTesla", tags=["AgentTesla"],
                    first_days_ago=0.05),
          uh=urlhaus_none(), tf=threatfox_none(), vt=vt_not_found("file", SHA["agenttesla-fresh"])),
    # A hash no list knows.
    _name("hash-unknown-to-abusech", SHA["nothing-known"], "unknown",
          "MalwareBazaar, URLhaus, ThreatFox and OTX have never seen it", entity_type="StixFile",
          mb=bazaar_none(), uh=urlhaus_none(), tf=threatfox_none(),
          otx=otx(SHA["nothing-known"], "FileHash-SHA256")),
)
