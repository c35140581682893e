"""Defining the code location raises no Dagster lifecycle warning: every defs module imports,
and the definitions load, in a fresh interpreter where deprecation, beta, preview and
supersession warnings are errors (load_from_defs_folder silences warnings while it imports,
so the modules are imported directly first)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ERRORS = ["-W", "error::DeprecationWarning",
          "-W", "error::dagster._utils.warnings.BetaWarning",
          "-W", "error::dagster._utils.warnings.PreviewWarning",
          "-W", "error::dagster._utils.warnings.SupersessionWarning"]


def test_defs_modules_and_definitions_load_without_lifecycle_warnings():
    modules = sorted(p.stem for p in (ROOT / "cti_assets" / "defs").glob("*.py")
                     if p.stem != "__init__")
    code = "\n".join([*(f"import cti_assets.defs.{m}" for m in modules),
                      "import dagster as dg",
                      "from cti_assets.definitions import defs",
                      "dg.Definitions.validate_loadable(defs)",
                      "for job in ('enrichment', 'rescore'):",
                      "    assert defs.resolve_job_def(job).partitions_def is not None"])
    done = subprocess.run([sys.executable, *ERRORS, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
