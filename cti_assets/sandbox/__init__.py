"""Offline stand-ins for the enrichment providers' HTTP APIs (see server.ProviderSandbox)."""

from cti_assets.sandbox.data import ACTOR_NAMES, FAMILY_NAMES, PROFILES, profile_of
from cti_assets.sandbox.faults import FAULTS, PROVIDERS
from cti_assets.sandbox.server import (
    BASE_URL_PATHS,
    ProviderSandbox,
    RequestRecord,
    serve_forever,
)

__all__ = [
    "ACTOR_NAMES",
    "BASE_URL_PATHS",
    "FAMILY_NAMES",
    "FAULTS",
    "PROFILES",
    "PROVIDERS",
    "ProviderSandbox",
    "RequestRecord",
    "profile_of",
    "serve_forever",
]
