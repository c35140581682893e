"""cti-assets: Dagster assets that enrich OpenCTI observables into scored, explained knowledge."""

from cti_assets.arrow_memory import use_jemalloc

use_jemalloc()  # before anything of ours loads pyarrow

__version__ = "0.1.0"
