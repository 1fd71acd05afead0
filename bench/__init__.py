"""The benchmarks (docs/benchmarks.md): `python -m bench.<name>` runs one, `python -m bench` every one in turn."""

BENCHMARKS = ("queue", "ingest", "worker_api", "search", "retrieval", "reconcile", "cluster", "rerank")
"""Every benchmark module, in the order `make bench` runs them."""
