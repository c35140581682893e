"""How a run is asked to look some observables up anew: the run config every provider lookup
asset reads (`refresh_values`). The CLI's enrich and the OpenCTI connector both build it here, so
they can never disagree with the lookup assets on its shape."""

from __future__ import annotations

from cti_assets.providers.base import ALL_PROVIDERS, NETWORK_CONTEXT


def run_config_refreshing(values: list[str]) -> dict:
    """Run config forcing a fresh lookup of the given values on every provider asset."""
    return {
        "ops": {
            f"{provider}_lookups": {"config": {"refresh_values": list(values)}}
            for provider in ALL_PROVIDERS
            if provider != NETWORK_CONTEXT
        }
    }
