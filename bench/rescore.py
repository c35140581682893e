"""Re-scoring history: one day of a million observables read back from stored lookups, merged,
scored and written, as the `rescore` job does, with zero provider calls.

The stored lookups are synthetic but shaped like the real ones: one Parquet file per asset as
the IO manager writes them (outputs/<asset>/<day>.parquet), each in-scope row with its own
fields JSON (values drawn per row, so nearly every JSON text is distinct), skips for types out
of scope, some not_found and errors; and, as the lookup assets store them, those fields
parsed into typed columns. The timed part runs in a fresh subprocess so its peak
resident memory (VmHWM) is the job's alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import workload
from cti_assets import settings, tables
from cti_assets.providers import base
from cti_assets.providers.fields import PROVIDER_FIELDS, PROVIDER_SCOPE, is_list
from cti_assets.providers.typed_fields import with_typed_fields
from cti_assets.sandbox.data import ACTOR_NAMES, FAMILY_NAMES

DAY = "2026-11-20"
LOOKUP_PROVIDERS = (base.NETWORK_CONTEXT, *workload.API_PROVIDERS)
_STRINGS = {
    "classification": ["unknown", "unknown", "unknown", "benign", "malicious", "suspicious"],
    "name": [*ACTOR_NAMES, "Google", "Cloudflare", None],
    "usage_type": ["Data Center/Web Hosting/Transit", "Fixed Line ISP", "Commercial"],
    "country_code": ["US", "DE", "NL", "RU", "CN", "BR", "FR"],
    "isp": ["Example Hosting", "Transit Net", "Metro Fibre"],
    "org": ["Example Hosting", "Transit Net", "Metro Fibre"],
    "asn": ["AS64500", "AS14061", "AS16509"],
    "trust_level": ["1", "2", None],
    "range_name": [None],
    "hash_type": ["SHA-256"],
}
_LISTS = {
    "ports": [[80, 443], [22], [3389, 445], [], [8080, 8443, 22]],
    "vulns": [[], ["CVE-2021-44228"], ["CVE-2019-0708", "CVE-2020-0796"]],
    "threat_names": [[], [FAMILY_NAMES[0]], [FAMILY_NAMES[1], "trojan"]],
    "categories": [[], [18, 14], [22]],  # AbuseIPDB report categories
    "virustotal.categories": [[], ["malware"], ["phishing", "newly registered"]],
    "tags": [[], ["scanner"], ["tor", "vpn"], ["malware"]],
}
_DEFAULT_LIST = [[], ["a.example-cdn.com"], ["ns1.registrar.com", "ns2.registrar.com"]]


def _json_column(provider: str, name: str, dtype: str, rng: np.random.Generator,
                 n: int) -> np.ndarray:
    """The JSON text of one field for n rows."""
    if dtype == "Int64":
        if name.endswith("date"):
            values = rng.integers(1_700_000_000, 1_790_000_000, n)
        else:  # most observables have no detections, reports or votes
            values = rng.integers(0, 100, n) * (rng.random(n) < 0.2)
        values = values.astype(str).astype(object)
    elif dtype == "Float64":
        values = np.round(rng.uniform(1.0, 4.5, n), 3).astype(str).astype(object)
    elif dtype == "boolean":
        values = np.array(["true", "false", "null"], dtype=object)[rng.integers(0, 3, n)]
    elif is_list(dtype):
        choices = _LISTS.get(f"{provider}.{name}", _LISTS.get(name, _DEFAULT_LIST))
        pool = [json.dumps(v) for v in choices]
        values = np.array(pool, dtype=object)[rng.integers(0, len(pool), n)]
    elif name in ("last_seen", "first_seen", "last_reported_at"):
        days = rng.integers(0, 365, n)
        values = (np.datetime64("2025-11-20") + days).astype(str).astype(object)
        values = '"' + values + '"'
    else:
        pool = [json.dumps(v) for v in _STRINGS.get(name, ["example", None])]
        values = np.array(pool, dtype=object)[rng.integers(0, len(pool), n)]
    return values


def fields_json(provider: str, n: int, seed: int) -> np.ndarray:
    """n fields JSON objects (sorted keys, as the runner writes them)."""
    rng = np.random.default_rng(seed)
    out = np.full(n, "{", dtype=object)
    for i, (name, dtype) in enumerate(sorted(PROVIDER_FIELDS[provider].items())):
        values = _json_column(provider, name, dtype, rng, n)
        out = out + (", " if i else "") + f'"{name}": ' + values
    return out + "}"


def observables_table(n: int) -> pd.DataFrame:
    """n observables in the workload's mix, built column-wise (OBSERVABLE_COLUMNS)."""
    index = np.arange(n)
    types = np.array(workload._CYCLE, dtype=object)[index % len(workload._CYCLE)]
    values = np.array([workload.value_of(i) for i in range(n)], dtype=object)
    stix_types = pd.Series(types).map(workload.stix_type_of).to_numpy(dtype=object)
    stix_ids = stix_types + "--00000000-0000-4000-8000-" + pd.Series(index).map(
        "{:012x}".format).to_numpy(dtype=object)  # fmt: skip
    columns = {
        "internal_id": pd.Series(index).map("{:024x}".format),
        "stix_id": stix_ids,
        "entity_type": types,
        "value": values,
        "normalized_value": values,
        "hash_type": np.where(types == "StixFile", "SHA-256", None),
        "tlp": "TLP:CLEAR",
        "tlp_reason": "unmarked",
        "marking_ids": [[] for _ in range(n)],
        "labels": [[] for _ in range(n)],
        "existing_score": pd.array(np.where(index % 10 == 0, index % 100, -1), dtype="Int64"),
        "created_at": pd.Timestamp(f"{DAY}T09:00:00Z"),
        "status": "ok",
        "reason": None,
    }
    frame = pd.DataFrame(columns)
    frame.loc[frame["existing_score"] < 0, "existing_score"] = pd.NA
    return frame.astype({k: v for k, v in tables.OBSERVABLE_COLUMNS.items() if v != "list"})


def lookups_table(provider: str, observables: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One LOOKUP_COLUMNS row per observable: ok / not_found / error in scope, else skipped;
    with the typed field columns the lookup assets store beside the JSON."""
    n = len(observables)
    rng = np.random.default_rng(seed)
    in_scope = observables["entity_type"].isin(PROVIDER_SCOPE[provider]).to_numpy()
    draw = rng.random(n)
    status = np.where(~in_scope, base.SKIPPED,
                      np.where(draw < 0.85, base.OK,
                               np.where(draw < 0.97, base.NOT_FOUND, base.ERROR)))  # fmt: skip
    ok = status == base.OK
    fields = np.full(n, "{}", dtype=object)
    fields[ok] = fields_json(provider, int(ok.sum()), seed)
    answered = (status == base.OK) | (status == base.NOT_FOUND)
    digests = pd.Series(np.arange(n) + (seed << 32)).map("{:064x}".format).to_numpy(dtype=object)
    frame = pd.DataFrame({
        "stix_id": observables["stix_id"],
        "entity_type": observables["entity_type"],
        "normalized_value": observables["normalized_value"],
        "provider": provider,
        "status": status,
        "reason": np.where(~in_scope, base.SKIP_OUT_OF_SCOPE,
                           np.where(status == base.ERROR, base.ERR_TRANSIENT, None)),
        "fields": fields,
        "fetched_at": pd.Series(pd.Timestamp(f"{DAY}T09:05:00Z"), index=observables.index)
        .where(answered),
        "raw_digest": np.where(answered, digests, None),
        "from_cache": False,
        "latency_ms": np.where(answered, 100.0 + rng.random(n) * 10, np.nan),
        "http_status": pd.array(np.where(ok, 200, np.where(answered, 404, -1)), dtype="Int64"),
        "message": np.where(status == base.ERROR, "HTTP 503: upstream unavailable", None),
    })  # fmt: skip
    frame.loc[~answered, "http_status"] = pd.NA
    return with_typed_fields(provider, frame.astype(tables.LOOKUP_COLUMNS))


def write_history(outputs: Path, n: int, chunk: int = 1_000_000) -> dict:
    """The stored observables and lookups of one day with n observables; sizes on disk.

    Past `chunk` observables the first chunk's rows are written again with other ids (the
    stix_id's first UUID group and the internal_id's first 8 hex digits hold the chunk's
    number), so 10 million rows cost one million rows' generation and every id stays distinct.
    """
    observables = observables_table(min(n, chunk))
    tables = {"observables": observables}
    for seed, provider in enumerate(LOOKUP_PROVIDERS, start=1):
        tables[f"{provider}_lookups"] = lookups_table(provider, observables, seed)
    sizes = {}
    for asset, frame in tables.items():
        path = outputs / asset / f"{DAY}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        if n <= chunk:
            frame.to_parquet(path, index=False, engine="pyarrow")
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            with pq.ParquetWriter(path, table.schema) as writer:
                for number, start in enumerate(range(0, n, chunk)):
                    writer.write_table(_renumbered(table.slice(0, min(chunk, n - start)), number))
        sizes[asset] = path.stat().st_size
    return sizes


def _renumbered(table: pa.Table, number: int) -> pa.Table:
    """The table's ids with the chunk's number in them (chunk 0 unchanged)."""
    if not number:
        return table
    if "stix_id" in table.column_names:
        ids = pc.replace_substring(table["stix_id"], "--00000000-", f"--{number:08x}-",
                                   max_replacements=1)
        table = table.set_column(table.schema.get_field_index("stix_id"), "stix_id", ids)
    if "internal_id" in table.column_names:
        ids = pc.utf8_replace_slice(table["internal_id"], 0, 8, f"{number:08x}")
        table = table.set_column(table.schema.get_field_index("internal_id"), "internal_id", ids)
    return table


_TIMED = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
from pathlib import Path
from cti_assets.storage.parquet import FrameBatches, StoredTable
from cti_assets.scoring.batched import (ScoreSummary, merge_batches, merge_lookup_columns,
                                        score_batches)
base, day, providers, rows = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
phases = {"imports": time.perf_counter() - t0}
cpu0 = os.times()

def peak_kb():
    # VmHWM is this process image's own peak; ru_maxrss would also count the parent's
    # resident memory at fork, which Linux carries over exec.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def stored(asset, columns=None):  # a local path, as the IO manager passes it
    return StoredTable(Path(f"{base}/{asset}/{day}.parquet"), columns)

# Step 1, merged_enrichment: the IO manager's inputs, slices merged and written.
t = time.perf_counter()
observables = stored("observables")
lookups = {p: stored(f"{p}_lookups", merge_lookup_columns(p)) for p in providers}
merged_path = Path(f"{base}/merged_enrichment-{day}.parquet")
FrameBatches(merge_batches(observables, lookups, rows)).write(merged_path)
del observables, lookups
phases["merged_enrichment"] = time.perf_counter() - t
# Step 2, observable_scores: merged read back in slices, scored, policy, written, checked.
t = time.perf_counter()
summary = ScoreSummary()
merged = StoredTable(merged_path)
scores = score_batches(merged, None, summary, None, "keep_higher", rows)
FrameBatches(scores).write(Path(f"{base}/observable_scores-{day}.parquet"))
# The stored table itself (older trees, as bench/same_output.py runs them: its ids).
checks = summary.checks(merged if hasattr(summary, "aligned") else merged.column("stix_id"))
phases["observable_scores"] = time.perf_counter() - t
assert all(passed for passed, _ in checks.values()), checks
print(json.dumps({"phases": phases, "rows": summary.rows,
                  "wall_s": time.perf_counter() - t0 - phases["imports"],
                  "maxrss_kb": peak_kb(),
                  "cpu_user_s": os.times().user - cpu0.user,
                  "cpu_sys_s": os.times().system - cpu0.system,
                  "verdicts": summary.metadata()["verdicts"]}))
"""


def rescore(outputs: Path, rows: int = settings.DEFAULT_BATCH_ROWS,
            profile_to: Path | None = None) -> dict:
    """The rescore job's two steps in a fresh interpreter, `rows` observables at a time."""
    arguments = [_TIMED, str(outputs), DAY, ",".join(LOOKUP_PROVIDERS), str(rows)]
    command = [sys.executable, "-c", *arguments]
    if profile_to is not None:
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile_to),
                   "-c", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"re-scoring failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args, scratch: Path) -> dict:
    """The history written once per size, then re-scored `--rescore-repeat` times: the figures
    are the median run's (wall times on a shared 2-core machine vary by a fifth from run to
    run) and the highest peak of all runs. `--rescore-n` (1M) gives the headline figures;
    `--rescore-scale` sizes (3M, 10M) say how time and memory grow with the day."""
    base = _measure_size(args, scratch / "outputs", args.rescore_n)
    scaling = [base]
    for n in getattr(args, "rescore_scale", None) or []:
        scaling.append(_measure_size(args, scratch / f"outputs-{n}", n))
    base["scaling"] = [{k: size[k] for k in SCALING_KEYS} for size in scaling]
    largest = scaling[-1]
    base["largest_over_base"] = round(largest["wall_s"] / base["wall_s"], 2)
    base["peak_gb_every_size"] = max(size["peak_gb"] for size in scaling)
    return base


SCALING_KEYS = ("n", "stored_mb", "wall_s", "runs_wall_s", "peak_gb", "cpu_s", "load", "rows")


def _measure_size(args, outputs: Path, n: int) -> dict:
    sizes = write_history(outputs, n)
    runs = []
    for _ in range(max(1, args.rescore_repeat)):
        load = os.getloadavg()[0]  # the machine is shared: the load beside every figure
        runs.append({**rescore(outputs, args.rescore_batch_rows), "load": round(load, 2)})
    shutil.rmtree(outputs, ignore_errors=True)  # 10M rows hold about 7 GB of Parquet
    median = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
    return {
        "n": n,
        "batch_rows": args.rescore_batch_rows,
        "stored_mb": round(sum(sizes.values()) / 2**20, 1),
        "wall_s": round(median["wall_s"], 3),
        "runs_wall_s": [round(run["wall_s"], 2) for run in runs],
        "phases_s": {k: round(v, 3) for k, v in median["phases"].items()},
        "peak_gb": round(max(run["maxrss_kb"] for run in runs) / 2**20, 3),
        "cpu_s": round(median.get("cpu_user_s", 0) + median.get("cpu_sys_s", 0), 1),
        "load": [run["load"] for run in runs],
        "rows": median["rows"],
        "verdicts": median["verdicts"],
    }


def section(result: dict) -> str:
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in result["phases_s"].items()
                       if k != "imports")  # fmt: skip
    runs = result.get("runs_wall_s", [result["wall_s"]])
    loads = result.get("load")
    text = (
        "## 3. Re-scoring\n\n"
        f"{result['n']:,} observables of one day read back from stored Parquet "
        f"({result['stored_mb']} MB: observables and seven lookup tables, written as the IO "
        "manager writes them) and re-scored as the rescore job's two steps do it, "
        f"{result.get('batch_rows', 0):,} observables at a time (CTI_BATCH_ROWS): "
        "merged_enrichment (the lookup columns it needs only, fields taken from the typed "
        "columns the lookup assets store, merged, written) then observable_scores (merged read "
        "back, scored, score policy, written, blocking checks), in a fresh process, zero "
        f"provider calls. Wall **{result['wall_s']:.2f} s** (target <= 10 s; the median of "
        f"{len(runs)} runs: {', '.join(f'{w:.2f}' for w in runs)} s; {phases}; interpreter "
        f"imports excluded), peak resident memory **{result['peak_gb']:.2f} GB** (target <= 2 "
        "GB; the highest peak resident set (VmHWM) of the runs' processes, imports included)"
        + (f"; load average before each run {loads}" if loads else "")
        + f". Verdicts: {result['verdicts']}."
        + (f" Measured {result['measured']}." if result.get("measured") else "") + "\n"
    )
    scaling = result.get("scaling") or []
    if len(scaling) > 1:
        base = scaling[0]
        rows = [
            f"| {size['n']:,} | {size['stored_mb']:,} | {size['wall_s']:.2f} "
            f"({', '.join(f'{w:.1f}' for w in size['runs_wall_s'])}) | "
            f"{size['wall_s'] / base['wall_s']:.2f} | {size['n'] / base['n']:.0f} | "
            f"{size['cpu_s']} | {size['peak_gb']:.2f} | {size['load']} |"
            for size in scaling
        ]
        text += (
            "\nGrowth with the day (same slices of CTI_BATCH_ROWS, history past 1M written as "
            "renumbered copies of the first million):\n\n"
            "| Observables | Stored MB | Wall s, median (runs) | x 1M wall | x 1M rows | "
            "CPU s (user+sys) | Peak GB | Load before each run |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Largest size over 1M: **{result['largest_over_base']:.2f}x** the wall time "
            f"(target <= 10.5x for 10x the rows); peak at every size "
            f"**{result['peak_gb_every_size']:.2f} GB** (target <= 2 GB).\n"
        )
    if result.get("carried_from"):
        text += ("\nThe comparisons with older code below are carried over from an earlier "
                 "results.json (bench/rescore_cost.py measured them against a checkout of the "
                 "older commit, which this run does not make); they describe the commits they "
                 "name.\n")
    compared = result.get("compared") or []
    if compared:
        rows = [
            f"| {side['code']} | {side['wall_s']:.2f} "
            f"({', '.join(f'{w:.1f}' for w in side['runs_wall_s'])}) "
            f"| {side['cpu_s']:.1f} | {side['peak_gb']:.2f} | {side['load']} |"
            for side in compared
        ]
        text += (
            "\nThe same 1M re-score by earlier checkouts of the code, runs alternated with this "
            "one's (A, B, C, A, B, C, ...) so each saw the same machine load; each ran its own "
            "benchmark script on a history its own bench code wrote:\n\n"
            "| Code | Wall s, median (runs) | CPU s (user+sys, median run) | Peak GB | "
            "Load before each run |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        )
    counted = result.get("instructions")
    if counted:  # from bench/rescore_cost.py, which the machine's load does not move
        text += (
            f"\nInstructions executed by the re-score of {counted['n']:,} observables in slices "
            f"of {counted['rows']:,} (`python -m bench.rescore_cost instructions`, valgrind's "
            "callgrind, every thread, interpreter imports excluded): "
            + ", ".join(f"{side['code']} {side['rescore'] / 1e9:.2f} G"
                        for side in counted["sides"])
            + f"; now / before issue 14 **{counted['ratio']:.3f}**.\n"
        )
    return text
