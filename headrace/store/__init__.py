"""Postgres: the pool, migrations, the queue, documents and chunks, and search."""
