"""The demo, dev and on-demand runs: the whole graph on the embedded default, against the
provider sandbox, from one command.

`make demo` starts the sandbox, imports the shipped sample over two days (or more: `--days`),
materialises every asset for each day, prints the top scores with their explanations and where
the outputs are, then stops the sandbox. Runs are recorded in $DAGSTER_HOME, so `make dev`
shows them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path

from cti_assets import settings
from cti_assets.cli.runs import dagster_env, materialise, set_pool_limits
from cti_assets.intake.observable import STIX_TO_ENTITY_TYPE
from cti_assets.providers.config import KEY_VARS

DEMO_DAYS = ("2026-11-20", "2026-11-21")
# Relative volume of new observables by weekday (Monday first): feeds are quieter at weekends.
# Spreading the sample over more than the two demo days follows it, so the plots of a longer
# demo show a week's rise and fall rather than a flat line.
WEEKDAY_VOLUME = (1.0, 1.2, 1.1, 1.3, 0.9, 0.4, 0.3)
DEMO_KEY = "demo-sandbox-key"  # the sandbox accepts any key; real keys never go to it
# The prefixes of the providers' key variables (<PREFIX>_API_KEY), from the provider settings.
KEYED_PROVIDERS = tuple(sorted({var.removesuffix("_API_KEY") for var in KEY_VARS.values()
                                if var}))



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


def demo_days(n: int = len(DEMO_DAYS), last: str = DEMO_DAYS[-1]) -> tuple[str, ...]:
    """n consecutive days ending on the demo's last day (n=2: DEMO_DAYS)."""
    if n < 1:
        raise ValueError(f"the demo needs at least one day, not {n}")
    end = date.fromisoformat(last)
    return tuple((end - timedelta(days=n - 1 - i)).isoformat() for i in range(n))


def day_shares(days: tuple[str, ...], total: int) -> list[int]:
    """How many of `total` observables each day receives, in proportion to its weekday's
    WEEKDAY_VOLUME (largest remainders; every day at least one when total allows)."""
    weights = [WEEKDAY_VOLUME[date.fromisoformat(day).weekday()] for day in days]
    exact = [total * w / sum(weights) for w in weights]
    counts = [max(int(x), 1 if total >= len(days) else 0) for x in exact]
    by_remainder = sorted(range(len(days)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(counts) < total:
        counts[by_remainder[i % len(days)]] += 1
        i += 1
    while sum(counts) > total:
        counts[max(range(len(days)), key=lambda d: counts[d] - exact[d])] -= 1
    return counts


def split_sample(days: tuple[str, ...], folder: Path,
                 by_weekday: bool = False) -> list[tuple[str, Path]]:
    """Spread the sample's observables over the demo days; context objects go on the first.

    Round robin by default (equal days); by_weekday gives each day its day_shares, the days'
    observables interleaved through the sample so that every day gets a mix of types.
    """
    bundle = json.loads(sample_bundle_path().read_text())
    observables = [o for o in bundle["objects"] if o["type"] in STIX_TO_ENTITY_TYPE]
    if by_weekday:
        counts = day_shares(days, len(observables))
        slots = sorted(((k + 0.5) / n, d) for d, n in enumerate(counts) for k in range(n))
        owner = [d for _, d in slots]
    else:
        owner = [i % len(days) for i in range(len(observables))]
    per_day: list[list[dict]] = [[] for _ in days]
    observable_index = 0
    for obj in bundle["objects"]:
        if obj["type"] in STIX_TO_ENTITY_TYPE:
            per_day[owner[observable_index]].append(obj)
            observable_index += 1
        else:
            per_day[0].append(obj)
    files = []
    for day, objects in zip(days, per_day, strict=True):
        path = folder / f"sample-{day}.json"
        path.write_text(json.dumps({**bundle, "objects": objects}))
        files.append((day, path))
    return files


def import_sample(days: tuple[str, ...] = DEMO_DAYS, by_weekday: bool = False) -> None:
    from cti_assets.sources.bundle_files import import_bundles
    from cti_assets.sources.local import LocalStixStore

    store = LocalStixStore()
    with tempfile.TemporaryDirectory() as folder:
        for day, path in split_sample(days, Path(folder), by_weekday):
            moment = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
            report = import_bundles(store, [path], moment)
            print(f"  {day}: {report.objects} objects ({report.created} new)")


def print_scores(partition_keys, n: int = 12) -> None:
    import pandas as pd

    from cti_assets.storage.outputs import read_partition

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


def run_demo(sandbox_port: int = 8765, n_days: int = len(DEMO_DAYS)) -> int:
    """The demo over n_days consecutive days; more than the two demo days follow the weekday
    volumes (day_shares)."""
    from cti_assets.sandbox import ProviderSandbox

    days = demo_days(n_days)

    print(f"data directory: {settings.data_dir()}; Dagster home: {settings.dagster_home_path()}")
    sandbox = ProviderSandbox(port=sandbox_port)
    try:
        sandbox.start()
    except OSError:
        sandbox = ProviderSandbox(port=0).start()
    try:
        print(f"provider sandbox on {sandbox.url}")
        point_providers_at(sandbox.base_urls)
        print("importing the sample bundle")
        import_sample(days, by_weekday=n_days > len(DEMO_DAYS))
        failed = materialise(days)
        print(f"\nprovider calls this run: {sandbox.request_count()} (the cache answers the rest)")
    finally:
        sandbox.stop()
    if failed:
        print(f"\nfailed partitions: {', '.join(failed)}", file=sys.stderr)
        return 1
    print_scores(days)
    print(f"\noutputs (Parquet, one file per asset and day): {settings.outputs_base()}")
    print(f"local STIX store: {settings.store_path()}")
    print("explain a score: .venv/bin/cti-assets explain <value>   UI: make dev")
    return 0


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
        # our own interpreter and fixed arguments, with the same data dir and Dagster home
        return subprocess.call(command, env=dagster_env())  # noqa: S603
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.stop()
