"""Headrace: document ingestion on Kubernetes, from an IngestionJob to searchable chunks in Postgres."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headrace")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
