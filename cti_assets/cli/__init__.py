"""`cti-assets`: the terminal commands (see cli.main)."""
