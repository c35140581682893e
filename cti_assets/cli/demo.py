"""The demo: the whole graph on the embedded default, against the provider sandbox, from one
command (`cti-assets dev`, in cli/dev.py, and `enrich --sandbox-port` reuse its sandbox wiring).

`make demo` starts the sandbox, imports the shipped sample over two days (or more: `--days`,
every one a partition), materialises every asset for each day the sample's observables fall on
(an earlier demo's keep their days: plan_demo), prints the top scores with their explanations and
where the outputs are, then stops the sandbox. Runs are recorded in $DAGSTER_HOME, so `make dev`
shows them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path

from cti_assets import settings
from cti_assets.cli.errors import CliError
from cti_assets.cli.runs import materialise
from cti_assets.intake.observable import STIX_TO_ENTITY_TYPE
from cti_assets.providers.base import ALL_PROVIDERS
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


def refuse_sandbox_with_opencti() -> None:
    """CliError when the source and sink is OpenCTI: the sandbox's answers are made up, and its
    scores must never reach a real platform. Checked before a sandbox starts."""
    if settings.source_kind() == "opencti":
        raise CliError(
            "the provider sandbox answers with made-up data, so it never runs against OpenCTI "
            "(OPENCTI_URL or CTI_SOURCE=opencti is set): set CTI_SOURCE=local to try the "
            "sandbox, or run `cti-assets dev --no-sandbox` with real provider keys")


def point_providers_at(base_urls: dict[str, str]) -> None:
    """Send every provider to the sandbox, with a placeholder key so each one runs."""
    refuse_sandbox_with_opencti()
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


def first_partition() -> date:
    """The first daily partition (CTI_PARTITIONS_START, a day: settings refuses anything else)."""
    return date.fromisoformat(settings.partitions_start())


def checked_demo_days(n: int, last: str = DEMO_DAYS[-1]) -> tuple[str, ...]:
    """demo_days(n, last) when every one of them is a daily partition: on or after the first
    (CTI_PARTITIONS_START) and not after today (UTC). CliError naming the limit otherwise,
    decided before a day is listed (--days 100000 would list them back to 1753)."""
    if n < 1:
        raise CliError(f"--days must be at least 1, not {n}")
    start, end, today = first_partition(), date.fromisoformat(last), datetime.now(UTC).date()
    if end > today:
        raise CliError(f"the demo's last day, {last}, is after today's partition, {today} (UTC)")
    if end < start:
        raise CliError(f"the demo's last day, {last}, is before the first partition, {start} "
                       f"(CTI_PARTITIONS_START): set it to {last} or earlier")
    most = (end - start).days + 1
    if n > most:
        try:
            reach = f"would start on {end - timedelta(days=n - 1)},"
        except OverflowError:
            reach = "reaches back"
        raise CliError(f"--days {n} {reach} before the first partition, {start} "
                       f"(CTI_PARTITIONS_START): the demo ends on {last}, so --days is at most "
                       f"{most}")
    return demo_days(n, last)


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


def _sample_split(days: tuple[str, ...], by_weekday: bool) -> tuple[dict, list[list[dict]]]:
    """The sample bundle and the objects of each day (see split_sample)."""
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
    return bundle, per_day


def split_sample(days: tuple[str, ...], folder: Path,
                 by_weekday: bool = False) -> list[tuple[str, Path]]:
    """Spread the sample's observables over the demo days; context objects go on the first.

    Round robin by default (equal days); by_weekday gives each day its day_shares, the days'
    observables interleaved through the sample so that every day gets a mix of types.
    """
    bundle, per_day = _sample_split(days, by_weekday)
    files = []
    for day, objects in zip(days, per_day, strict=True):
        path = folder / f"sample-{day}.json"
        path.write_text(json.dumps({**bundle, "objects": objects}))
        files.append((day, path))
    return files


def import_sample(days: tuple[str, ...] = DEMO_DAYS, by_weekday: bool = False) -> None:
    """Import the split sample, each day's objects created at 09:00 UTC that day (a day the
    split leaves empty, with more days than observables, is no import)."""
    from cti_assets.sources.bundle_files import import_bundles
    from cti_assets.sources.local import LocalStixStore

    bundle, per_day = _sample_split(days, by_weekday)
    store = LocalStixStore()
    with tempfile.TemporaryDirectory() as folder:
        for day, objects in zip(days, per_day, strict=True):
            if not objects:
                continue
            path = Path(folder) / f"sample-{day}.json"
            path.write_text(json.dumps({**bundle, "objects": objects}))
            moment = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
            report = import_bundles(store, [path], moment)
            print(f"  {day}: {report.objects} objects ({report.created} new)")


@dataclass(frozen=True)
class DemoPlan:
    """The days a demo over the days asked for materialises and scores: those the sample's
    observables fall on once imported; `note` says why when they are not the days asked for."""

    asked: tuple[str, ...]
    days: tuple[str, ...]
    note: str | None = None


def _stored_days(stix_ids: list[str]) -> dict[str, str]:
    """The UTC creation day of those objects already in the local store; nothing is created."""
    from cti_assets.sources.base import SourceError
    from cti_assets.sources.local import LocalStixStore

    path = settings.data_dir_path() / "store.sqlite"
    if not path.is_file():
        return {}
    try:
        seen = LocalStixStore(path).first_seen(stix_ids)
    except SourceError as error:
        raise CliError(str(error)) from None
    return {stix_id: moment.astimezone(UTC).date().isoformat() for stix_id, moment in seen.items()}


def _span(days: tuple[str, ...]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def plan_demo(asked: tuple[str, ...], by_weekday: bool = False) -> DemoPlan:
    """Which days a demo over `asked` materialises, decided before anything is written.

    An observable is created when it first enters the store, and importing it again never
    changes that (sources/local.py): observables already there, from an earlier demo with
    another --days or an import, stay on their days. So the demo runs the days the sample's
    observables fall on, the new ones on their days of the split and the others where they
    are, and says so when those are not the days asked for (a day the split leaves empty is not
    run). CliError when one of them is no partition."""
    _, per_day = _sample_split(asked, by_weekday)
    split = {obj["id"]: day for day, objects in zip(asked, per_day, strict=True)
             for obj in objects if obj["type"] in STIX_TO_ENTITY_TYPE}
    stored = _stored_days(sorted(split))
    days = tuple(sorted({stored.get(stix_id, day) for stix_id, day in split.items()}))
    start, today = first_partition(), datetime.now(UTC).date()
    outside = [day for day in days if not start <= date.fromisoformat(day) <= today]
    if outside:
        raise CliError(
            f"the sample's observables are already in the store on {_span(tuple(outside))}, "
            f"outside the partitions ({start}, CTI_PARTITIONS_START, to today, {today}), and "
            "keep the creation time of their first import: use an empty CTI_DATA_DIR")
    moved = sum(1 for stix_id, day in stored.items() if day != split[stix_id])
    note = None
    if moved:
        note = (f"{moved} of the sample's {len(split)} observables were already in the store on "
                f"other days (an object keeps the creation time of its first import, e.g. an "
                f"earlier demo's): scoring the {len(days)} day(s) they fall on, {_span(days)}"
                + (f", not the {len(asked)} asked for" if days != asked else "")
                + "; an empty CTI_DATA_DIR gives a new split")
    elif days != asked:
        note = (f"{len(asked) - len(days)} of the {len(asked)} days get none of the sample's "
                f"{len(split)} observables: they are not run")
    return DemoPlan(asked, days, note)


def cache_hits(partition_keys) -> int:
    """Lookups the response cache answered in the stored lookups of these days: the rows
    `from_cache` of every provider's table (the cache_hits each lookup reports)."""
    from cti_assets.storage.outputs import read_partition

    hits = 0
    for key in partition_keys:
        for provider in ALL_PROVIDERS:
            try:
                lookups = read_partition(f"{provider}_lookups", key)
            except FileNotFoundError:
                continue
            if "from_cache" in lookups:
                hits += int(lookups["from_cache"].fillna(False).astype(bool).sum())
    return hits


def provider_calls_line(calls: int, hits: int) -> str:
    """The run's provider calls; the cache only when it answered something."""
    line = f"provider calls this run: {calls}"
    if hits:
        line += f"; {hits} lookup(s) answered from the response cache, at no call"
    return line


def _why_no_scores(partition_key: str) -> str:
    from cti_assets.storage.outputs import read_partition

    try:
        observables = read_partition("observables", partition_key)
    except FileNotFoundError:
        return "no observables were stored for it"
    if observables.empty:
        return "no observable in the store was created on that day (UTC)"
    return f"its {len(observables)} observable(s) were read but none was scored (see the run above)"


def print_scores(partition_keys, n: int = 12) -> int:
    """The verdict counts and the top n scores of the days, with their explanations; a day
    without scores is named, with the reason. How many scores there are (0: no table)."""
    import pandas as pd

    from cti_assets.storage.outputs import read_partition

    frames = []
    for key in partition_keys:
        try:
            frame = read_partition("observable_scores", key)
        except FileNotFoundError:
            print(f"\nno scores for {key}: none were stored for it")
            continue
        if frame.empty:
            print(f"\nno scores for {key}: {_why_no_scores(key)}")
        else:
            frames.append(frame)
    if not frames:
        return 0
    scores = pd.concat(frames, ignore_index=True)
    accepted = (scores["observable_status"] == "ok").fillna(False)
    verdicts = scores.loc[accepted, "verdict"].value_counts().to_dict()
    not_scored = scores.loc[~accepted, "observable_status"].value_counts().to_dict()
    print("\n== Scores: " + ", ".join(
        [f"{v} {c}" for v, c in sorted(verdicts.items())]
        + [f"not scored ({status}) {c}" for status, c in sorted(not_scored.items())]))
    ranked = scores.sort_values(["score", "confidence"], ascending=False, na_position="last")
    print(f"{'score':>5} {'conf':>4}  {'verdict':<10} {'type':<12} value")
    for row in ranked.head(n).itertuples():
        score = "-" if pd.isna(row.score) else int(row.score)
        conf = "-" if pd.isna(row.confidence) else int(row.confidence)
        print(
            f"{score:>5} {conf:>4}  {row.verdict:<10} {row.entity_type:<12} {row.normalized_value}"
        )
        print(f"{'':>12}{row.explanation}{_written_note(row)}")
    return len(scores)


def _written_note(row) -> str:
    """What the store holds when the score policy wrote another score than the computed one."""
    import pandas as pd

    final = getattr(row, "final_score", None)
    if final is None or pd.isna(final) or pd.isna(row.score) or int(final) == int(row.score):
        return ""
    return f" [the store keeps {int(final)}: {row.policy_action}]"


def run_demo(sandbox_port: int = 8765, n_days: int = len(DEMO_DAYS)) -> int:
    """The demo over n_days consecutive days; more than the two demo days follow the weekday
    volumes (day_shares). The days are checked, and those to run decided (plan_demo), before
    anything is started or written."""
    from cti_assets.sandbox import ProviderSandbox

    refuse_sandbox_with_opencti()
    by_weekday = n_days > len(DEMO_DAYS)
    plan = plan_demo(checked_demo_days(n_days), by_weekday)

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
        import_sample(plan.asked, by_weekday=by_weekday)
        if plan.note:
            print(plan.note)
        failed = materialise(plan.days)
        hits = cache_hits([day for day in plan.days if day not in failed])
        print("\n" + provider_calls_line(sandbox.request_count(), hits))
    finally:
        sandbox.stop()
    if failed:
        print(f"\nfailed partitions: {', '.join(failed)}", file=sys.stderr)
        return 1
    if not print_scores(plan.days):
        print(f"\nno scores for any of the demo's days ({_span(plan.days)})", file=sys.stderr)
        return 1
    print(f"\noutputs (Parquet, one file per asset and day): {settings.outputs_base()}")
    print(f"local STIX store: {settings.store_path()}")
    print("explain a score: .venv/bin/cti-assets explain <value>   UI: make dev")
    return 0
