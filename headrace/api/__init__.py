"""The HTTP API: job status, live progress and full-text search."""
