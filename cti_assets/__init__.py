"""cti-assets: Dagster assets that enrich OpenCTI observables into scored, explained knowledge."""

__version__ = "0.1.0"
