"""`python -m cti_assets.cli`: the same as the `cti-assets` command."""

import sys

from cti_assets.cli.main import main

sys.exit(main())
