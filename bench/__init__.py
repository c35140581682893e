"""Benchmarks of cti-assets against the connector model (see bench/README.md)."""
