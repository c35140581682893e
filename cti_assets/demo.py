"""The demo, dev and on-demand runs: the whole graph on the embedded default, against the
provider sandbox, from one command.

`make demo` starts the sandbox, imports the shipped sample over two days, materialises every
asset for both days, prints the top scores with their explanations and where the outputs are,
then stops the sandbox. Runs are recorded in $DAGSTER_HOME, so `make dev` shows them.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from cti_assets import settings
from cti_assets.observable import STIX_TO_ENTITY_TYPE

DEMO_DAYS = ("2026-11-20", "2026-11-21")
DEMO_KEY = "demo-sandbox-key"  # the sandbox accepts any key; real keys never go to it
KEYED_PROVIDERS = ("VIRUSTOTAL", "SHODAN", "ABUSEIPDB", "GREYNOISE", "SECURITYTRAILS")
POOL_LIMITS = {
    "virustotal": 1,
    "securitytrails": 1,
    "shodan": 1,
    "shodan_internetdb": 2,
    "greynoise": 2,
    "abuseipdb": 2,
    "opencti": 1,
}


def sample_bundle_path() -> Path:
    return Path(str(resources.files("cti_assets") / "data" / "sample_bundle.json"))


def point_providers_at(base_urls: dict[str, str]) -> None:
    """Send every provider to the sandbox, with a placeholder key so each one runs."""
    os.environ.update(base_urls)
    for provider in KEYED_PROVIDERS:
        os.environ[f"{provider}_API_KEY"] = DEMO_KEY
    # the sandbox answers fast; let the demo run at a friendly pace rather than free-tier quota
    os.environ.setdefault("VIRUSTOTAL_PER_MINUTE", "600")
    os.environ.setdefault("VIRUSTOTAL_PER_DAY", "100000")
    os.environ.setdefault("SECURITYTRAILS_PER_MONTH", "100000")
    os.environ.setdefault("SECURITYTRAILS_PER_DAY", "100000")
    os.environ.setdefault("SHODAN_PER_SECOND", "50")


def split_sample(days: tuple[str, ...], folder: Path) -> list[tuple[str, Path]]:
    """Spread the sample's observables over the demo days; context objects go on the first."""
    bundle = json.loads(sample_bundle_path().read_text())
    per_day: list[list[dict]] = [[] for _ in days]
    observable_index = 0
    for obj in bundle["objects"]:
        if obj["type"] in STIX_TO_ENTITY_TYPE:
            per_day[observable_index % len(days)].append(obj)
            observable_index += 1
        else:
            per_day[0].append(obj)
    files = []
    for day, objects in zip(days, per_day, strict=True):
        path = folder / f"sample-{day}.json"
        path.write_text(json.dumps({**bundle, "objects": objects}))
        files.append((day, path))
    return files


def import_sample(days: tuple[str, ...] = DEMO_DAYS) -> None:
    from cti_assets.sources.local import LocalStixStore
    from cti_assets.stix_io import import_bundles

    store = LocalStixStore()
    with tempfile.TemporaryDirectory() as folder:
        for day, path in split_sample(days, Path(folder)):
            moment = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
            report = import_bundles(store, [path], moment)
            print(f"  {day}: {report.objects} objects ({report.created} new)")


def load_defs():
    """The definitions, loaded after the environment is set (resources bind env vars)."""
    module = importlib.import_module("cti_assets.definitions")
    return importlib.reload(module).defs


def dagster_instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def materialise(partition_keys, run_config: dict | None = None, job_name: str = "enrichment"):
    """Run the job for each partition in process; print one line per asset as a progress log."""
    import dagster as dg

    defs = load_defs()
    job = defs.resolve_job_def(job_name)
    instance = dagster_instance()
    failed = []
    for key in partition_keys:
        print(f"\n== {job_name} {key}")
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        result = job.execute_in_process(
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            run_config={**quiet, **(run_config or {})},
        )
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            meta = {k: v.value for k, v in mat.metadata.items()}
            detail = ", ".join(
                f"{name}={meta[name]}"
                for name in ("rows", "calls", "cache_hits", "objects", "created", "updated")
                if name in meta
            )
            print(f"  ok  {mat.asset_key.to_user_string():<28} {detail}")
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                print(
                    f"  FAILED {event.step_key}: {event.event_specific_data.error.message.strip()}"
                )
        if not result.success:
            failed.append(key)
    return failed


def print_scores(partition_keys, n: int = 12) -> None:
    import pandas as pd

    from cti_assets.defs.io import read_partition

    frames = [read_partition("observable_scores", key) for key in partition_keys]
    scores = pd.concat(frames, ignore_index=True)
    verdicts = scores["verdict"].value_counts().to_dict()
    print("\n== Scores: " + ", ".join(f"{v} {c}" for v, c in sorted(verdicts.items())))
    ranked = scores.sort_values(["score", "confidence"], ascending=False, na_position="last")
    print(f"{'score':>5} {'conf':>4}  {'verdict':<10} {'type':<12} value")
    for row in ranked.head(n).itertuples():
        score = "-" if pd.isna(row.score) else int(row.score)
        conf = "-" if pd.isna(row.confidence) else int(row.confidence)
        print(
            f"{score:>5} {conf:>4}  {row.verdict:<10} {row.entity_type:<12} {row.normalized_value}"
        )
        print(f"{'':>12}{row.explanation}")


def run_demo(sandbox_port: int = 8765) -> int:
    from cti_assets.sandbox import ProviderSandbox

    print(f"data directory: {settings.data_dir()}")
    sandbox = ProviderSandbox(port=sandbox_port)
    try:
        sandbox.start()
    except OSError:
        sandbox = ProviderSandbox(port=0).start()
    try:
        print(f"provider sandbox on {sandbox.url}")
        point_providers_at(sandbox.base_urls)
        print("importing the sample bundle")
        import_sample()
        failed = materialise(DEMO_DAYS)
        print(f"\nprovider calls this run: {sandbox.request_count()} (the cache answers the rest)")
    finally:
        sandbox.stop()
    if failed:
        print(f"\nfailed partitions: {', '.join(failed)}", file=sys.stderr)
        return 1
    print_scores(DEMO_DAYS)
    print(f"\noutputs (Parquet, one file per asset and day): {settings.outputs_base()}")
    print(f"local STIX store: {settings.store_path()}")
    print("explain a score: .venv/bin/cti-assets explain <value>   UI: make dev")
    return 0


def set_pool_limits(limits: dict[str, int] | None = None) -> dict[str, int]:
    """Give each provider pool its limit on the instance (a fresh instance has none)."""
    instance = dagster_instance()
    limits = limits or POOL_LIMITS
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits


def run_dev(sandbox_port: int = 8765, ui_port: int = 3000) -> int:
    """dagster dev with the sandbox in a child process and the sensor switched on."""
    from cti_assets.sandbox import ProviderSandbox

    sandbox = ProviderSandbox(port=sandbox_port).start()
    point_providers_at(sandbox.base_urls)
    os.environ["CTI_SENSOR_DEFAULT_ON"] = "1"
    set_pool_limits()
    print(f"provider sandbox on {sandbox.url}; pools set; sensor on")
    command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(ui_port)]
    try:
        return subprocess.call(command)  # noqa: S603 - our own interpreter and fixed arguments
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.stop()


def enrich_values(values: list[str], sandbox_port: int | None = None) -> int:
    """Import the values when needed, run their day's pipeline with a forced refresh of them,
    and print their scores."""
    from cti_assets.ondemand import enrich_now

    sandbox = None
    if sandbox_port is not None:
        from cti_assets.sandbox import ProviderSandbox

        sandbox = ProviderSandbox(port=sandbox_port).start()
        point_providers_at(sandbox.base_urls)
    try:
        return enrich_now(values)
    finally:
        if sandbox:
            sandbox.stop()
