"""Project state shared between hosts: the PostgreSQL, Redis and object-store backends.

The embedded default keeps the response cache, quota records, rate-limit buckets and deferred
ledger in SQLite files under CTI_DATA_DIR (cti_assets.providers); this package holds the other
backends and the one place that picks between them from configuration (`config.StateConfig`),
so two hosts with their own disks pay each provider answer once and spend one budget.
"""
