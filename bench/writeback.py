"""Write-back throughput: a day of observables written to the OpenCTI double at a set latency.

The double (tests/opencti_double.py) runs in its own process, so its request handling never
shares an interpreter lock with the clients measured, and answers each HTTP request after
`--writeback-latency-ms` (30 ms: a round trip plus the platform's own work), concurrent
requests overlapping as on a real server. It is seeded with the day's observables, as the
platform holds them before the pipeline reads them. The same objects (scores, verdict and tag
labels, provider references, one note each, an indicator and `based-on` for the malicious
ones, `indicates` to the threat entities some are linked to: what build_bundle writes) go:

(a) through pycti's sequential `OpenCTIStix2.import_bundle` (what a connector does without the
    platform's queue), on the first `--writeback-sample` observables' objects, extrapolated
    linearly to the day by object count (labelled);
(b) through OpenCTISource.write_bundle, the pipeline's write-back, with its worker pool, on the
    whole day, then once more (a rerun must create nothing).

After each, the double's graph is read back: every object of the bundle must resolve to one
node, and the nodes created must be exactly the bundle's objects the platform did not hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pandas as pd

from bench import workload
from bench.sandbox_proc import stop_process

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"  # noqa: S105 - the double's own token, nothing real
AMBER = "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"
THREATS = [f"APT-bench-{k}" for k in range(10)]
# Per 20 consecutive observables: 3 malicious (indicator), 4 suspicious, 8 benign, 5 unknown.
_VERDICTS = ["malicious"] * 3 + ["suspicious"] * 4 + ["benign"] * 8 + ["unknown"] * 5
_SCORES = {"malicious": 85, "suspicious": 55, "benign": 5, "unknown": None}
_PROVIDERS = {
    "IPv4-Addr": ("greynoise", "abuseipdb"),
    "IPv6-Addr": ("abuseipdb",),
    "Domain-Name": ("virustotal", "securitytrails"),
    "Url": ("urlhaus", "virustotal"),
    "StixFile": ("virustotal",),
}
# Types the write-back creates nodes of; labels, references and vocabularies are shared.
_META = {"Label", "External-Reference", "Vocabulary", "Marking-Definition"}


class DoubleProcess:
    """`python -m tests.opencti_double` as a child process, read through /_double/."""

    def __init__(self, latency_ms: float, startup_timeout_s: float = 30.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(  # our own interpreter, fixed arguments
            [sys.executable, "-m", "tests.opencti_double", "--port", "0", "--latency-ms",
             str(latency_ms), "--token", TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        assert self.process.stdout is not None
        deadline = time.monotonic() + startup_timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                error = self.process.stderr.read() if self.process.stderr else ""
                raise RuntimeError(f"the OpenCTI double exited: {error[-500:]}")
            if line.startswith("# opencti double on "):
                self.url = line.split()[4]
                return
        self.stop()
        raise RuntimeError("the OpenCTI double did not start in time")

    def _admin(self, action: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_double/{action}", data=data,
                                         method="POST" if data is not None else "GET")
        with urllib.request.urlopen(request, timeout=120) as response:  # loopback only
            return json.loads(response.read())

    def seed(self, observables: list[dict], threats: list[str]) -> None:
        self._admin("seed", {"observables": observables, "threats": [
            {"entity_type": "Intrusion-Set", "name": name} for name in threats]})

    def nodes(self) -> list[dict]:
        return self._admin("nodes")

    def requests(self) -> dict:
        return self._admin("requests")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the double's process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> DoubleProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def day(n: int) -> dict:
    """The day's seed (as the platform holds it) and the frames build_bundle takes."""
    from pycti import IntrusionSet

    from tests.opencti_double import observable_standard_id

    seed, observables, scores, context = [], [], [], []
    for index in range(n):
        entity_type, value = workload.entity_type_of(index), workload.value_of(index)
        hashes = {"SHA-256": value} if entity_type == "StixFile" else None
        stix_id = observable_standard_id(entity_type, None if hashes else value, hashes)
        created = workload.BENCH_DAY + timedelta(seconds=index)
        seed.append({"entity_type": entity_type, "value": None if hashes else value,
                     "hashes": hashes, "created_at": created.isoformat(),
                     "markings": ["TLP:AMBER"], "labels": ["feed"]})
        observables.append({
            "internal_id": None, "stix_id": stix_id, "entity_type": entity_type, "value": value,
            "normalized_value": value, "hash_type": "SHA-256" if hashes else None,
            "tlp": "TLP:AMBER", "marking_ids": [AMBER], "labels": ["feed"],
            "existing_score": None, "created_at": created, "status": "ok", "reason": None})
        verdict = _VERDICTS[index % len(_VERDICTS)]
        score = _SCORES[verdict]
        components = [{"rule": f"{provider}-{verdict}", "provider": provider,
                       "field": "classification", "value": verdict,
                       "contribution": score or 0, "raw_digest": f"d{index}"}
                      for provider in _PROVIDERS[entity_type]]
        scores.append({
            "stix_id": stix_id, "internal_id": None, "entity_type": entity_type,
            "normalized_value": value, "observable_status": "ok", "tlp": "TLP:AMBER",
            "existing_score": None, "score": score, "confidence": 70, "verdict": verdict,
            "components": json.dumps(components), "explanation": f"{verdict} by the bench",
            "final_score": score, "policy_action": "write"})
        if verdict == "malicious" and index % 40 == 0:
            name = THREATS[index // 40 % len(THREATS)]
            context.append({"stix_id": stix_id, "normalized_value": value, "linked": True,
                            "links": json.dumps([{
                                "entity_id": IntrusionSet.generate_id(name),
                                "entity_type": "intrusion-set", "name": name,
                                "via": "provider", "relationship_type": "related-to",
                                "indicator_id": None, "provider": _PROVIDERS[entity_type][0],
                                "reported_name": name}])})
    return {"seed": seed, "observables": pd.DataFrame(observables),
            "scores": pd.DataFrame(scores), "context": pd.DataFrame(context)}


def bundle_of(frames: dict, first: int | None = None) -> dict:
    """build_bundle of the day (or of its first `first` observables), written at noon."""
    from cti_assets.writeback.bundle import WritebackConfig, build_bundle

    scores = frames["scores"] if first is None else frames["scores"].iloc[:first]
    written = workload.BENCH_DAY + timedelta(hours=3)
    return build_bundle(scores, frames["context"], frames["observables"], WritebackConfig(),
                        written)


def check(double: DoubleProcess, bundle: dict, nodes_before: dict[str, int],
          seeded_ids: set[str]) -> dict:
    """Lost: bundle objects no node answers to; duplicated: nodes created beyond the bundle's
    new objects that were found (the platform held the seeded ones), plus objects sharing a
    node; the nodes created per type. A seeded id is lost only if its node went away."""
    nodes = double.nodes()
    alias: dict[str, str] = {}
    for node in nodes:
        for stix_id in [node["standard_id"], *node["stix_ids"]]:
            alias.setdefault(stix_id, node["id"])
    ids = [obj["id"] for obj in bundle["objects"]]
    lost = [i for i in ids if i not in alias]
    expected_new = sum(1 for i in ids if i not in seeded_ids)
    after: dict[str, int] = {}
    for node in nodes:
        if node["entity_type"] not in _META:
            after[node["entity_type"]] = after.get(node["entity_type"], 0) + 1
    created = {t: after.get(t, 0) - nodes_before.get(t, 0) for t in after}
    created = {t: c for t, c in created.items() if c}
    resolved = {alias[i] for i in ids if i in alias}
    return {"objects": len(ids), "lost": len(lost), "lost_examples": lost[:3],
            "nodes_created": sum(created.values()), "expected_new": expected_new,
            # nodes beyond the new objects that were found, and objects sharing a node
            "duplicated": max(0, sum(created.values()) - (expected_new - len(lost)))
            + (len(ids) - len(lost) - len(resolved)),
            "created_by_type": created}


def _types_before(double: DoubleProcess) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in double.nodes():
        if node["entity_type"] not in _META:
            counts[node["entity_type"]] = counts.get(node["entity_type"], 0) + 1
    return counts


def _for_pycti(bundle: dict) -> dict:
    from cti_assets.sources.base import REMOVE_LABELS

    return {**bundle, "objects": [{k: v for k, v in obj.items() if k != REMOVE_LABELS}
                                  for obj in bundle["objects"]]}


def run_pycti(frames: dict, bundle: dict, latency_ms: float) -> dict:
    """(a) pycti's OpenCTIStix2.import_bundle, one object after another."""
    import logging

    from pycti import OpenCTIApiClient

    with DoubleProcess(latency_ms) as double:
        double.seed(frames["seed"], THREATS)
        before, seeded = _types_before(double), _seeded_ids(double)
        api = OpenCTIApiClient(double.url, TOKEN, log_level="error",
                               perform_health_check=False, bundle_send_to_queue=False)
        for name in ("api", "admin", "worker"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        load = os.getloadavg()[0]
        cpu = _cpu(double)
        started = time.perf_counter()
        imported, _ = api.stix2.import_bundle(_for_pycti(bundle), update=True)
        wall = time.perf_counter() - started
        cpu = _cpu(double, cpu)
        served = double.requests()
        result = check(double, bundle, before, seeded)
    return {"wall_s": round(wall, 2), "imported": len(imported), "requests": served["total"],
            **cpu,
            "requests_by_field": served["fields"], "invalid": len(served["invalid"]),
            "load_avg_1m": round(load, 2), **result}


def _cpu(double: DoubleProcess, since: dict | None = None) -> dict:
    """CPU seconds of this process (the client) and of the double; with `since`, the use
    since then: what the write-back cost the machine besides waiting for the latency."""
    times = os.times()
    now = {"client_cpu_s": times.user + times.system, "double_cpu_s": double.cpu_s()}
    if since is None:
        return now
    return {key: round(value - since[key], 1) for key, value in now.items()}


def _seeded_ids(double: DoubleProcess) -> set[str]:
    return {stix_id for node in double.nodes() for stix_id in [node["standard_id"],
                                                               *node["stix_ids"]]}


def run_pipeline(frames: dict, bundle: dict, latency_ms: float, workers: int,
                 rerun: bool = True) -> dict:
    """(b) OpenCTISource.write_bundle with `workers` in flight, then (`rerun`) the same bundle
    again."""
    from cti_assets.sources.opencti import OpenCTISource

    with DoubleProcess(latency_ms) as double:
        double.seed(frames["seed"], THREATS)
        before, seeded = _types_before(double), _seeded_ids(double)
        source = OpenCTISource(double.url, TOKEN, workers=workers, timeout_s=60)
        load = os.getloadavg()[0]
        cpu = _cpu(double)
        started = time.perf_counter()
        stats = source.write_bundle(bundle)
        wall = time.perf_counter() - started
        cpu = _cpu(double, cpu)
        served = double.requests()
        result = check(double, bundle, before, seeded)
        second = None
        if rerun:
            started = time.perf_counter()
            again = source.write_bundle(bundle)
            rerun_wall = time.perf_counter() - started
            after = check(double, bundle, before, seeded)
            second = {"wall_s": round(rerun_wall, 2), "created": again.created,
                      "updated": again.updated, "failed": again.failed,
                      "nodes_created": after["nodes_created"], "lost": after["lost"],
                      "duplicated": after["duplicated"]}
        total = double.requests()
    return {"workers": workers, "wall_s": round(wall, 2), "created": stats.created,
            "updated": stats.updated, "failed": stats.failed,
            "failures": stats.failures[:3], "requests": served["total"], **cpu,
            "requests_by_field": served["fields"], "max_in_flight": served["max_in_flight"],
            "invalid": len(total["invalid"]) + len(total["unsupported"]),
            "load_avg_1m": round(load, 2), **result, "rerun": second}


def measure(args, scratch: Path) -> dict:
    """Both write-backs of the same day in one run; the speed-up of (b) over (a), (b) at each
    worker count asked for (the last one is the headline)."""
    from cti_assets import settings

    n, sample = args.writeback_n, min(args.writeback_sample, args.writeback_n)
    latency = args.writeback_latency_ms
    counts = args.writeback_workers or [settings.writeback_workers()]
    frames = day(n)
    full, part = bundle_of(frames), bundle_of(frames, sample)
    print(f"  (a) pycti import_bundle, sequential: {len(part['objects'])} objects of "
          f"{sample} observables", flush=True)
    sequential = run_pycti(frames, part, latency)
    scale = len(full["objects"]) / len(part["objects"])
    sequential["extrapolated"] = sample < n
    sequential["wall_day_s"] = round(sequential["wall_s"] * scale, 1)
    print(f"      {sequential['wall_s']} s -> {sequential['wall_day_s']} s for the day",
          flush=True)
    runs = []
    for workers in counts:
        print(f"  (b) write_bundle, {workers} workers: {len(full['objects'])} objects of {n} "
              "observables", flush=True)
        run = run_pipeline(frames, full, latency, workers, rerun=workers == counts[-1])
        run["speedup"] = round(sequential["wall_day_s"] / run["wall_s"], 2)
        print(f"      {run['wall_s']} s ({run['speedup']}x), rerun "
              f"{(run['rerun'] or {}).get('wall_s')} s", flush=True)
        runs.append(run)
    headline = runs[-1]
    return {"n": n, "sample": sample, "latency_ms": latency, "objects": len(full["objects"]),
            "sequential": sequential, "concurrent": headline, "runs": runs,
            "workers": headline["workers"], "speedup": headline["speedup"],
            "lost": sequential["lost"] + sum(
                r["lost"] + (r["rerun"] or {}).get("lost", 0) for r in runs),
            "duplicated": sequential["duplicated"] + sum(
                r["duplicated"] + (r["rerun"] or {}).get("duplicated", 0) for r in runs),
            "rerun": headline["rerun"]}


def _cpu_text(run: dict) -> str:
    if "client_cpu_s" not in run:
        return "-"
    return f"{run['client_cpu_s']} + {run['double_cpu_s']}"


def section(result: dict) -> str:
    seq = result["sequential"]
    label = (f"measured on the first {result['sample']:,} observables ({seq['objects']:,} "
             f"objects) and extrapolated linearly by object count"
             if seq["extrapolated"] else "measured on the whole day")
    rows = [f"| (a) pycti `import_bundle`, sequential ({label}) | {seq['wall_s']} s "
            f"-> **{seq['wall_day_s']} s** for the day | {seq['requests']:,} | | {seq['lost']} | "
            f"{seq['duplicated']} | {_cpu_text(seq)} | {seq['load_avg_1m']} |"]
    for run in result["runs"]:
        rows.append(
            f"| (b) `OpenCTISource.write_bundle`, {run['workers']} workers (at most "
            f"{run['max_in_flight']} requests in flight) | **{run['wall_s']} s** | "
            f"{run['requests']:,} | **{run['speedup']}x** | {run['lost']} | "
            f"{run['duplicated']} | {_cpu_text(run)} | {run['load_avg_1m']} |")
        rerun = run["rerun"]
        if rerun is not None:
            rows.append(
                f"| (b) again, {run['workers']} workers (rerun: {rerun['created']} created, "
                f"{rerun['updated']:,} updated, {rerun['failed']} failed, "
                f"{rerun['nodes_created'] - run['nodes_created']} new nodes) | "
                f"{rerun['wall_s']} s | | | {rerun['lost']} | {rerun['duplicated']} | | |")
    con = result["concurrent"]
    return (
        "## Write-back throughput\n\n"
        f"A {result['n']:,}-observable day ({result['objects']:,} STIX objects: observables "
        "with score, verdict and tag labels and provider references, one note each, an "
        "indicator and `based-on` for the malicious ones, `indicates` to linked intrusion "
        "sets) written to the OpenCTI double, seeded with the day's observables as the "
        f"platform holds them (own process, threaded, {result['latency_ms']} ms per request, "
        "parsed and validated documents kept per query text as Apollo Server does). Each "
        "write-back on a fresh double; after each, every object of the bundle must resolve "
        "to one node and the nodes created must be exactly those the platform did not hold.\n\n"
        "| Write-back | Wall | Requests | Speed-up over (a) | Objects lost | Duplicated | "
        "CPU s: client + double | Load (1 min) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Headline ({con['workers']} workers): **{result['speedup']}x** (target >= 8x); "
        f"outcomes {con['created']:,} created, {con['updated']:,} updated, {con['failed']} "
        f"failed (nodes created {con['nodes_created']:,}, expected {con['expected_new']:,}). "
        "Besides what (a) sends, (b) asks which objects exist, with their labels (one query "
        "per 100 ids: exact created/updated counts, and the stale verdict labels to take off "
        "without reading each observable again; the day's observables carry none), and each "
        "worker's pycti client looks labels and vocabularies up once. Requests of (b) by "
        f"field: {con['requests_by_field']}.\n"
    )
