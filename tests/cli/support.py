"""Shared by the CLI tests: an isolated environment and the provider sandbox settings."""

from __future__ import annotations

from cti_assets.cli import demo
from cti_assets.providers.base import ALL_PROVIDERS

# Variables that would send the commands somewhere other than the test's data directory.
LEAKY_VARS = (
    "DAGSTER_HOME",
    "CTI_OUTPUTS_BASE",
    "CTI_SOURCE",
    "OPENCTI_URL",
    "CTI_PARTITIONS_START",
    "CTI_BATCH_ROWS",
    "CTI_RATELIMIT_REDIS_URL",
    "CTI_REDIS_URL",
    "CTI_STATE_POSTGRES_URL",
    "CTI_BODIES_URL",
    "CTI_EXECUTOR",
    "CTI_UNMARKED_TLP",
)
KEYED_PROVIDERS = demo.KEYED_PROVIDERS  # every provider's key prefix, from its settings
GENEROUS_LIMITS = {
    "VIRUSTOTAL_PER_MINUTE": "6000",
    "VIRUSTOTAL_PER_DAY": "100000",
    "SECURITYTRAILS_PER_MONTH": "100000",
    "SECURITYTRAILS_PER_DAY": "100000",
    "SHODAN_PER_SECOND": "100",
    "GREYNOISE_PER_SECOND": "100",
    "ABUSEIPDB_PER_SECOND": "100",
    "SHODAN_INTERNETDB_PER_SECOND": "100",
    "SECURITYTRAILS_PER_SECOND": "100",
    "CROWDSEC_PER_DAY": "100000",
} | {f"{provider.upper()}_PER_SECOND": "100" for provider in ALL_PROVIDERS}


def isolate(mp, data_dir) -> None:
    """Point every writer at `data_dir` (a pytest MonkeyPatch `mp`)."""
    mp.setenv("CTI_DATA_DIR", str(data_dir))
    for name in LEAKY_VARS:
        mp.delenv(name, raising=False)


def point_at_sandbox(mp, sandbox) -> None:
    """Every provider sent to the sandbox with a placeholder key and limits that never wait."""
    for name, value in sandbox.base_urls.items():
        mp.setenv(name, value)
    for provider in KEYED_PROVIDERS:
        mp.setenv(f"{provider}_API_KEY", "test-key")
    for name, value in GENEROUS_LIMITS.items():
        mp.setenv(name, value)


def one_line(text: str) -> str:
    """The only line of `text`; fails when there is none or more than one."""
    lines = text.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert "Traceback" not in text
    return lines[0]
