"""Every environment setting of the project, read when asked (never at import).

Where the pipeline keeps what it writes is one data directory, set by CTI_DATA_DIR: every writer
(local STIX store, Parquet outputs, response cache, rate-limit buckets, Dagster home) derives its
path from here, so one variable moves the whole project. The Dagster home follows it
(DAGSTER_HOME, default <data dir>/dagster_home, as `make` sets it), so every entry point, make or
a bare `cti-assets`, records runs and pool limits in one instance. Provider settings live with
the providers (providers/config.py), read the same way.

Every accessor refuses a value it cannot use with a `SettingsError` naming the variable, the value
and what is allowed; `check_environment` reads them all at once, so a command can refuse a bad
environment in one line before it starts anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from cti_assets.envvars import SettingsError, bad_setting, flag, shown, whole

DEFAULT_DATA_DIR = "./data"
DEFAULT_BATCH_ROWS = 100_000
DEFAULT_PARTITIONS_START = "2026-01-01"


def data_dir_path() -> Path:
    """Where the data directory is (CTI_DATA_DIR, default ./data), absolute; not created."""
    return Path(os.environ.get("CTI_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()


def data_dir() -> Path:
    """The data directory (CTI_DATA_DIR, default ./data), created when missing."""
    path = data_dir_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


def dagster_home_path() -> Path:
    """The Dagster home (DAGSTER_HOME, default <data dir>/dagster_home), absolute; not created.
    `make` sets the same default, so runs land in one instance whichever way they start."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return Path(home).expanduser().resolve()
    return data_dir_path() / "dagster_home"


def store_path() -> Path:
    """SQLite file of the embedded STIX 2.1 store."""
    return data_dir() / "store.sqlite"


def cache_path() -> Path:
    """SQLite file of the provider response cache (raw bodies kept for lineage)."""
    return data_dir() / "cache.sqlite"


def ratelimit_path(provider: str | None = None) -> Path:
    """SQLite file holding a provider's rate-limit bucket and quota ledger, shared by every
    process on the machine. One file per provider, so providers never wait on each other's
    file lock."""
    if provider is None:
        return data_dir() / "ratelimit.sqlite"
    folder = data_dir() / "ratelimit"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{provider}.sqlite"


def outputs_base() -> str:
    """Base path of asset outputs; CTI_OUTPUTS_BASE may be an s3:// URL."""
    return os.environ.get("CTI_OUTPUTS_BASE") or str(data_dir() / "outputs")


def bundles_dir() -> Path:
    """Where dry-run and exported bundles are written."""
    path = data_dir() / "bundles"
    path.mkdir(parents=True, exist_ok=True)
    return path


def batch_rows() -> int:
    """Rows merged and scored at a time (CTI_BATCH_ROWS): memory grows with it, not the day."""
    text = os.environ.get("CTI_BATCH_ROWS", "").strip()
    if not text:
        return DEFAULT_BATCH_ROWS
    rows = whole(text)
    if rows is None or rows < 1:
        raise bad_setting("CTI_BATCH_ROWS", text, "a positive whole number")
    return rows


def _whole_number(name: str, default: int, minimum: int = 0) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    number = whole(text)
    if number is None or number < minimum:
        raise bad_setting(name, text, f"a whole number >= {minimum}")
    return number


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def partitions_start() -> str:
    """First day of the daily partitions (CTI_PARTITIONS_START, YYYY-MM-DD, default
    2026-01-01). It shapes the asset definitions, so it is read when the definitions are
    built."""
    text = os.environ.get("CTI_PARTITIONS_START", "").strip()
    if not text:
        return DEFAULT_PARTITIONS_START
    try:
        if not _DAY.fullmatch(text):
            raise ValueError(text)
        date.fromisoformat(text)
    except ValueError:
        raise bad_setting("CTI_PARTITIONS_START", text, "a date, YYYY-MM-DD") from None
    today = datetime.now(UTC).date()
    if date.fromisoformat(text) > today:  # no partition would exist, not even today's
        raise bad_setting("CTI_PARTITIONS_START", text, f"a day no later than today, {today}")
    return text


def sensor_batch_limit() -> int:
    """Observables the sensor reads per tick (CTI_SENSOR_BATCH_LIMIT)."""
    return _whole_number("CTI_SENSOR_BATCH_LIMIT", 50_000, minimum=1)


def sensor_lookback_s() -> int:
    """How far behind its watermark the sensor looks again each tick (CTI_SENSOR_LOOKBACK_S),
    for observables that became visible after newer ones had passed (indexing delay, an import
    with a past creation time). Ids seen in that window are remembered, so none runs twice."""
    return _whole_number("CTI_SENSOR_LOOKBACK_S", 3600)


def sensor_interval_s() -> int:
    """Seconds between sensor ticks (CTI_SENSOR_INTERVAL_S, default 5): a new observable waits
    up to that long before its run is even queued, the largest share of import -> write-back
    (bench/latency.py). Dagster's sensor daemon looks at sensors every 5 s, so less buys
    nothing; each tick costs one small source query (two with the look-back window)."""
    return _whole_number("CTI_SENSOR_INTERVAL_S", 5, minimum=1)


def sensor_default_on() -> bool:
    """Whether the sensor starts switched on (CTI_SENSOR_DEFAULT_ON; `make dev` sets it)."""
    return flag("CTI_SENSOR_DEFAULT_ON")


SOURCES = ("local", "opencti")


def source_kind() -> str:
    """The source and sink (CTI_SOURCE: local or opencti), opencti by itself when OPENCTI_URL is
    set, local otherwise."""
    text = os.environ.get("CTI_SOURCE", "").strip()
    if not text:
        return "opencti" if os.environ.get("OPENCTI_URL") else "local"
    if text.lower() not in SOURCES:
        raise bad_setting("CTI_SOURCE", text, f"one of {', '.join(SOURCES)}")
    return text.lower()


def opencti_ssl_verify() -> bool:
    """Whether the OpenCTI client checks the platform's TLS certificate (OPENCTI_SSL_VERIFY)."""
    return flag("OPENCTI_SSL_VERIFY", default=True)


def reenrich_days() -> int:
    """Days the weekly schedule re-enriches (CTI_REENRICH_DAYS)."""
    return _whole_number("CTI_REENRICH_DAYS", 7)


def lookup_error_rate_warn() -> float:
    """Share of a lookup's attempted calls that may fail before its `error_rate` check warns
    (CTI_LOOKUP_ERROR_RATE_WARN, 0 to 1, default 0.2); a run's config may override it."""
    text = os.environ.get("CTI_LOOKUP_ERROR_RATE_WARN", "").strip()
    if not text:
        return 0.2
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise bad_setting("CTI_LOOKUP_ERROR_RATE_WARN", text, "a share from 0 to 1")
    return value


EXECUTORS = ("multiprocess", "in_process")


def executor() -> str:
    """How a run executes its steps (CTI_EXECUTOR): `multiprocess` (default, one process per
    step, steps in parallel) or `in_process` (one process, steps in turn: no step start-up, for
    small runs and tests)."""
    raw = os.environ.get("CTI_EXECUTOR", "").strip()
    text = raw.lower().replace("-", "_")
    if not text:
        return "multiprocess"
    if text not in EXECUTORS:
        raise bad_setting("CTI_EXECUTOR", raw, f"one of {', '.join(EXECUTORS)}")
    return text


STEP_START_METHODS = ("forkserver", "spawn")


def step_start_method() -> str:
    """How a multiprocess run starts a step's process (CTI_STEP_START): `forkserver` (default
    where the platform has it) forks each step from a server process that imported Dagster,
    pandas and the definitions once, instead of each step importing them again (with eight
    steps starting at once on two cores, a step's start-up went from about 7 s to 2-3 s:
    bench/findings.md); `spawn` starts a fresh interpreter per step, Dagster's default."""
    import multiprocessing

    raw = os.environ.get("CTI_STEP_START", "").strip()
    text = raw.lower()
    if not text:
        available = multiprocessing.get_all_start_methods()
        return "forkserver" if "forkserver" in available else "spawn"
    if text not in STEP_START_METHODS:
        raise bad_setting("CTI_STEP_START", raw, f"one of {', '.join(STEP_START_METHODS)}")
    return text


def max_concurrent_steps() -> int:
    """Steps a multiprocess run executes at once (CTI_MAX_CONCURRENT_STEPS, default 8): set, not
    the host's CPU count, which a container's limit does not lower. 8 lets every cheap lookup
    (seven providers and the offline network context) run at once: they wait on providers'
    quotas, not on CPU, and with 4 a day's cheap lookups ran in two rounds, each as long as the
    slowest provider's quota (bench/results.md, "Throughput through the Dagster job")."""
    return _whole_number("CTI_MAX_CONCURRENT_STEPS", 8, minimum=1)


def writeback_workers() -> int:
    """Write-back requests to OpenCTI in flight at once (CTI_WRITEBACK_WORKERS, default 16): at
    tens of milliseconds a request, one at a time bounds a day of tens of thousands of objects
    to the round trip. 16, not 8: the write-back sends about as many requests as pycti's plain
    import, plus the existence checks and each worker's label and vocabulary look-ups, and
    waits between dependency phases, so 8 in flight stays under 8x pycti's sequential import
    (bench/results.md, "Write-back throughput")."""
    return _whole_number("CTI_WRITEBACK_WORKERS", 16, minimum=1)


def sensor_in_process_max() -> int:
    """Largest number of new observables in a day for which the sensor's run executes in one
    process (CTI_SENSOR_IN_PROCESS_MAX, default 200; 0: never): a handful of observables is
    scored sooner without a process per step."""
    return _whole_number("CTI_SENSOR_IN_PROCESS_MAX", 200)


def _settings_kept_elsewhere() -> list[Callable[[], object]]:
    """The accessors of the settings that other modules read, each validating its own (the
    unmarked TLP policy, every provider's settings and TLP ceiling, the shared state's names)."""
    from cti_assets.intake.observable import TLP_ORDER, canonical_tlp, unmarked_tlp
    from cti_assets.providers.config import DEFAULTS, env_prefix, settings_from_env
    from cti_assets.state import urls

    def provider_settings(provider: str) -> None:
        max_tlp = settings_from_env(provider).max_tlp
        if canonical_tlp(max_tlp) is None:  # an unknown ceiling would silently send nothing
            raise bad_setting(f"{env_prefix(provider)}_MAX_TLP", max_tlp,
                              f"one of {', '.join(TLP_ORDER)}")

    def state_name(name: str, default: str) -> Callable[[], object]:
        return lambda: urls.check_identifier(urls.env(name) or default, name)

    from cti_assets.scoring.weights import configured_weights

    return [
        unmarked_tlp,
        configured_weights,
        *(lambda p=provider: provider_settings(p) for provider in DEFAULTS),
        state_name(urls.SCHEMA_ENV, urls.DEFAULT_SCHEMA),
        state_name(urls.KEY_PREFIX_ENV, urls.DEFAULT_KEY_PREFIX),
    ]


# The accessors of this module that validate a value (CTI_DATA_DIR, DAGSTER_HOME and
# CTI_OUTPUTS_BASE take any path or URL).
CHECKED_HERE: tuple[Callable[[], object], ...] = (
    batch_rows, partitions_start, sensor_batch_limit, sensor_lookback_s, sensor_interval_s,
    sensor_default_on, source_kind, opencti_ssl_verify, reenrich_days, lookup_error_rate_warn,
    executor, step_start_method, max_concurrent_steps, writeback_workers, sensor_in_process_max,
)


def check_environment() -> None:
    """Read every setting of the package through the accessors the code uses; one
    SettingsError (one line, each bad variable with its value and what is allowed) when any is
    unusable. Creates nothing, so a command can call it before it starts or writes anything."""
    problems: list[str] = []
    for accessor in (*CHECKED_HERE, *_settings_kept_elsewhere()):
        try:
            accessor()
        except ValueError as error:
            problems.append(" ".join(str(error).split()))
    for name, path in (("CTI_DATA_DIR", data_dir_path()), ("DAGSTER_HOME", dagster_home_path())):
        if path.exists() and not path.is_dir():
            problems.append(f"{name} must be a directory, got {shown(str(path))}, a file")
    if problems:
        raise SettingsError("; ".join(problems))
