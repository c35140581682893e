"""Regenerate sample_bundle.json: `python -m scripts.make_sample`.

The sample is a small, realistic STIX 2.1 bundle that exercises every observable type, every
TLP level, threat entities with aliases, indicator and direct links, and a few values that must
be rejected. All names are fictitious; documentation address ranges (RFC 5737/3849) and reserved
names (.example, .test, .invalid) stand for malicious infrastructure, and attributions to the
few public-looking addresses are invented for the demonstration. Ids are deterministic: SCO ids
follow STIX 2.1 (uuid5), SDO and relationship ids follow OpenCTI's standard ids.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import stix2
from pycti import (
    Campaign,
    Identity,
    Indicator,
    IntrusionSet,
    Malware,
    MarkingDefinition,
    StixCoreRelationship,
    ThreatActorGroup,
)
from stix2.canonicalization.Canonicalize import canonicalize

from cti_assets.intake.observable import TLP_MARKING_IDS

OUTPUT = Path(__file__).with_name("sample_bundle.json")
SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
CREATED = "2025-01-15T09:00:00.000Z"

CLEAR, GREEN, AMBER, STRICT, RED = (TLP_MARKING_IDS[t] for t in (
    "TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED"))
AUTHOR = Identity.generate_id("cti-assets sample data", "organization")
STATEMENT = MarkingDefinition.generate_id("statement", "Sample data: attributions are fictitious")


def fake_digest(algorithm: str, seed: str) -> str:
    return hashlib.new(algorithm, f"cti-assets sample {seed}".encode()).hexdigest()


def sco(stix_type: str, value: str, markings: list[str], score: int | None = None,
        labels: list[str] | None = None) -> dict:
    digest = uuid.uuid5(SCO_NAMESPACE, canonicalize({"value": value}, utf8=False))
    stix_id = f"{stix_type}--{digest}"
    obj: dict = {"type": stix_type, "spec_version": "2.1", "id": stix_id, "value": value}
    if markings:
        obj["object_marking_refs"] = markings
    if score is not None:
        obj["x_opencti_score"] = score
    if labels:
        obj["x_opencti_labels"] = labels
    return obj


def file_sco(hashes: dict[str, str], markings: list[str], name: str | None = None,
             score: int | None = None, labels: list[str] | None = None) -> dict:
    stix_id = stix2.File(hashes=hashes, name=name).id if name else stix2.File(hashes=hashes).id
    obj: dict = {"type": "file", "spec_version": "2.1", "id": stix_id, "hashes": hashes,
                 "object_marking_refs": markings}
    if name:
        obj["name"] = name
    if score is not None:
        obj["x_opencti_score"] = score
    if labels:
        obj["x_opencti_labels"] = labels
    return obj


def sdo(stix_type: str, stix_id: str, name: str, **properties: object) -> dict:
    return {"type": stix_type, "spec_version": "2.1", "id": stix_id, "created": CREATED,
            "modified": CREATED, "name": name, "created_by_ref": AUTHOR,
            "object_marking_refs": [AMBER, STATEMENT], **properties}


def relationship(rel_type: str, source: str, target: str, markings: list[str] | None = None
                 ) -> dict:
    return {"type": "relationship", "spec_version": "2.1",
            "id": StixCoreRelationship.generate_id(rel_type, source, target),
            "created": CREATED, "modified": CREATED, "relationship_type": rel_type,
            "source_ref": source, "target_ref": target, "created_by_ref": AUTHOR,
            "object_marking_refs": markings or [AMBER]}


def indicator(pattern: str, name: str, observable_type: str, markings: list[str], score: int
              ) -> dict:
    return {"type": "indicator", "spec_version": "2.1", "id": Indicator.generate_id(pattern),
            "created": CREATED, "modified": CREATED, "name": name, "pattern": pattern,
            "pattern_type": "stix", "valid_from": CREATED,
            "indicator_types": ["malicious-activity"],
            "created_by_ref": AUTHOR, "object_marking_refs": markings,
            "x_opencti_main_observable_type": observable_type, "x_opencti_score": score}


def build() -> list[dict]:
    tlp_definitions = [json.loads(m.serialize()) for m in
                       (stix2.TLP_WHITE, stix2.TLP_GREEN, stix2.TLP_AMBER, stix2.TLP_RED)]
    statement = {"type": "marking-definition", "spec_version": "2.1", "id": STATEMENT,
                 "created": CREATED, "definition_type": "statement",
                 "name": "Sample data: attributions are fictitious",
                 "definition": {"statement": "Sample data: attributions are fictitious"}}
    author = {"type": "identity", "spec_version": "2.1", "id": AUTHOR, "created": CREATED,
              "modified": CREATED, "name": "cti-assets sample data",
              "identity_class": "organization"}

    heron = sdo("threat-actor", ThreatActorGroup.generate_id("Ashen Heron"), "Ashen Heron",
                aliases=["HERON-07", "Grey Wader", "Ashen Relay"],
                threat_actor_types=["crime-syndicate"])
    lantern = sdo("threat-actor", ThreatActorGroup.generate_id("Quiet Lantern"), "Quiet Lantern",
                  aliases=["Lantern Group", "Night Lantern"], threat_actor_types=["spy"])
    kestrel = sdo("intrusion-set", IntrusionSet.generate_id("Glass Kestrel"), "Glass Kestrel",
                  aliases=["GK-12"])
    tide = sdo("intrusion-set", IntrusionSet.generate_id("Copper Tide"), "Copper Tide",
               aliases=["CT-Group", "Tidewater"])
    paper_moon = sdo("campaign", Campaign.generate_id("Operation Paper Moon"),
                     "Operation Paper Moon", aliases=["Paper Moon"])
    harbor = sdo("campaign", Campaign.generate_id("Operation Silent Harbor"),
                 "Operation Silent Harbor")
    nimbus = sdo("malware", Malware.generate_id("NimbusLoader"), "NimbusLoader",
                 is_family=True, malware_types=["downloader"],
                aliases=["NimLoad", "nimbus-ldr", "CrimsonLynx"])
    driftwood = sdo("malware", Malware.generate_id("Driftwood RAT"), "Driftwood RAT",
                    is_family=True, malware_types=["remote-access-trojan"],
                aliases=["DriftRAT", "ShadowPetal"])
    pebble = sdo("malware", Malware.generate_id("Pebblecrypt"), "Pebblecrypt",
                 is_family=True, malware_types=["ransomware"],
                aliases=["PebbleLock", "PBC", "GlassHeron"])

    ip_c2 = sco("ipv4-addr", "198.51.100.23", [AMBER], 80, ["c2"])
    ip_c2b = sco("ipv4-addr", "203.0.113.45", [RED], 90, ["c2", "driftwood"])
    ip_public = sco("ipv4-addr", "45.137.22.81", [STRICT], 70, ["scanner"])
    ip_public2 = sco("ipv4-addr", "185.141.62.19", [AMBER])
    domain_c2 = sco("domain-name", "kestrel-telemetry.test", [AMBER], 75, ["c2"])
    domain_phish = sco("domain-name", "secure-docs-share.example", [GREEN], 60, ["phishing"])
    domain_idn = sco("domain-name", "BÜCHER-angebot.example.", [GREEN], None, ["phishing"])
    url_gate = sco("url", "http://198.51.100.23:8080/gate.php", [AMBER], 85)
    url_phish = sco("url", "hxxps://secure-docs-share[.]example/login.php?session=A1", [GREEN])
    host_mail = sco("hostname", "mail.kestrel-telemetry.test", [AMBER])
    file_loader = file_sco({"MD5": fake_digest("md5", "nimbus stage 1"),
                            "SHA-1": fake_digest("sha1", "nimbus stage 1"),
                            "SHA-256": fake_digest("sha256", "nimbus stage 1")},
                           [AMBER], "invoice_0415.pdf.exe", 90, ["loader"])
    file_ransom = file_sco({"SHA-256": fake_digest("sha256", "pebblecrypt payload")}, [RED], None,
                           95, ["ransomware"])
    file_rat = file_sco({"SHA-1": fake_digest("sha1", "driftwood implant")}, [STRICT])
    file_md5 = file_sco({"MD5": fake_digest("md5", "driftwood config")}, [AMBER])

    observables = [
        ip_c2, ip_c2b, ip_public, ip_public2,
        sco("ipv4-addr", "192.0.2.10", [GREEN], 40),
        sco("ipv4-addr", "10.20.30.40", [CLEAR], None, ["internal"]),
        sco("ipv4-addr", "8.8.8.8", [CLEAR], 0, ["benign-infrastructure"]),
        sco("ipv4-addr", "1.1.1.1", []),
        sco("ipv4-addr", "198.51.100.77", [GREEN, STATEMENT]),
        sco("ipv4-addr", "999.1.2.3", [GREEN]),  # invalid on purpose: octet out of range
        sco("ipv4-addr", "198.51.100.0/24", [GREEN]),  # invalid on purpose: a range
        sco("ipv6-addr", "2001:db8:85a3::8a2e:370:7334", [AMBER], 65),
        sco("ipv6-addr", "2001:DB8:0:0:0:0:0:1", [GREEN]),
        sco("ipv6-addr", "2606:4700:4700::1111", [CLEAR], None, ["benign-infrastructure"]),
        domain_c2, domain_phish, domain_idn,
        sco("domain-name", "ashfall-updates.invalid", [RED], 85),
        sco("domain-name", "quartz-sync[.]example", [AMBER]),
        sco("domain-name", "cdn-static-assets.test", [STRICT], 50),
        sco("domain-name", "Example.COM", [CLEAR], 0, ["benign-infrastructure"]),
        sco("domain-name", "example.org", []),
        sco("domain-name", "update..kestrel-telemetry.test", [AMBER]),  # invalid: empty label
        host_mail,
        sco("hostname", "vpn-gw01.corp.example", [GREEN], None, ["internal"]),
        sco("hostname", "WKS-FIN-042", [AMBER], None, ["internal"]),
        sco("hostname", "_ldap._tcp.dc01.corp.example", [GREEN]),
        sco("hostname", "relay7.ashfall-updates.invalid", [RED], 80),
        url_gate, url_phish,
        sco("url", "http://kestrel-telemetry.test/api/v2/check?id=1337&os=win", [AMBER], 70),
        sco("url", "https://BÜCHER-angebot.example/Angebot/./index.html#top", [GREEN]),
        sco("url", "ftp://files.ashfall-updates.invalid:21/pub/payload.bin", [RED]),
        sco("url", "https://example.com/", [CLEAR]),
        sco("url", "HTTP://[2001:DB8::1]:80/status", [GREEN]),
        file_loader, file_ransom, file_rat, file_md5,
        file_sco({"MD5": fake_digest("md5", "pebblecrypt dropper")}, [GREEN]),
        file_sco({"SHA-256": fake_digest("sha256", "quiet lantern backdoor")}, [AMBER], None, 75),
        file_sco({"SHA-512": fake_digest("sha512", "unsupported digest")}, [GREEN]),  # rejected
        # Fresh, unjudged sightings on public-looking addresses and made-up names: what the
        # providers are asked about. Nothing here says they are malicious; the sandbox decides.
        *[sco("ipv4-addr", ip, [GREEN]) for ip in (
            "45.83.12.7", "45.137.22.90", "91.92.250.14", "103.77.41.9", "146.70.12.33",
            "176.111.174.60", "194.26.29.102", "37.120.210.11")],
        sco("ipv6-addr", "2a0d:5600:1:2::15", [GREEN]),
        *[sco("domain-name", name, [GREEN]) for name in (
            "qoravex-cdn-sync.net", "vellmoraq-login.com", "zentrix-docs-portal.xyz",
            "plumvane-metrics.io")],
        sco("hostname", "api.qoravex-cdn-sync.net", [CLEAR]),
        sco("url", "http://qoravex-cdn-sync.net/dl/stage2.bin", [GREEN]),
        sco("url", "https://vellmoraq-login.com/account/verify?u=1", [CLEAR]),
        file_sco({"SHA-256": fake_digest("sha256", "fresh sighting one")}, [GREEN]),
        file_sco({"SHA-1": fake_digest("sha1", "fresh sighting two")}, [CLEAR]),
    ]

    def indicate(observable: dict, kind: str, targets: list[tuple[str, dict]], score: int
                 ) -> list[dict]:
        if observable["type"] == "file":
            algorithm = next(h for h in ("SHA-256", "SHA-1", "MD5") if h in observable["hashes"])
            pattern = f"[file:hashes.'{algorithm}' = '{observable['hashes'][algorithm]}']"
            name = observable["hashes"][algorithm]
        else:
            pattern = f"[{observable['type']}:value = '{observable['value']}']"
            name = observable["value"]
        marked = observable.get("object_marking_refs") or [GREEN]
        ind = indicator(pattern, name, kind, marked, score)
        rels = [relationship("based-on", ind["id"], observable["id"], marked)]
        rels += [relationship(rel_type, ind["id"], target["id"], marked)
                 for rel_type, target in targets]
        return [ind, *rels]

    linked = [
        *indicate(ip_c2, "IPv4-Addr", [("indicates", driftwood), ("indicates", kestrel)], 80),
        *indicate(ip_c2b, "IPv4-Addr", [("indicates", driftwood)], 90),
        *indicate(domain_c2, "Domain-Name", [("indicates", kestrel),
                                             ("indicates", paper_moon)], 75),
        *indicate(domain_phish, "Domain-Name", [("indicates", harbor),
                                                ("related-to", lantern)], 60),
        *indicate(url_gate, "Url", [("indicates", nimbus)], 85),
        *indicate(file_loader, "StixFile", [("indicates", nimbus)], 90),
        *indicate(file_ransom, "StixFile", [("indicates", pebble), ("indicates", tide)], 95),
        relationship("related-to", ip_public["id"], driftwood["id"]),
        relationship("related-to", host_mail["id"], kestrel["id"]),
        relationship("related-to", file_rat["id"], driftwood["id"], [STRICT]),
        relationship("related-to", tide["id"], file_md5["id"]),
        relationship("resolves-to", domain_c2["id"], ip_c2["id"]),
        relationship("related-to", url_phish["id"], domain_phish["id"], [GREEN]),
        relationship("attributed-to", kestrel["id"], heron["id"]),
        relationship("attributed-to", tide["id"], lantern["id"]),
        relationship("attributed-to", paper_moon["id"], kestrel["id"]),
        relationship("attributed-to", harbor["id"], tide["id"]),
        relationship("uses", kestrel["id"], driftwood["id"]),
        relationship("uses", kestrel["id"], nimbus["id"]),
        relationship("uses", tide["id"], pebble["id"]),
    ]
    entities = [heron, lantern, kestrel, tide, paper_moon, harbor, nimbus, driftwood, pebble]
    return [*tlp_definitions, statement, author, *entities, *observables, *linked]


def main() -> None:
    objects = build()
    ids = [obj["id"] for obj in objects]
    assert len(ids) == len(set(ids)), "duplicate ids in the sample"
    namespace = uuid.UUID("4d1f9e1c-3b0a-5c6e-9f43-2a9b6f1d7e85")
    bundle = {"type": "bundle",
              "id": f"bundle--{uuid.uuid5(namespace, 'cti-assets sample bundle')}",
              "objects": objects}
    OUTPUT.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(objects)} objects to {OUTPUT}")


if __name__ == "__main__":
    main()
