"""How a search is bounded when nobody says otherwise: the one set of defaults that `store.search.search()`'s
signature, the API's settings (`HEADRACE_SEARCH_*`) and `headrace search` all take theirs from."""

LIMIT = 10
"""Hits on one page."""

TIMEOUT_MS = 5000
"""Postgres `statement_timeout` of one search, in milliseconds."""

MAX_LIMIT = 100
"""Most hits one page of the API may ask for."""

CANDIDATES = 100
"""Hits of each ranking (keyword, semantic) that hybrid search fuses."""

EF_SEARCH = 100
"""pgvector `hnsw.ef_search`: candidates the HNSW index visits per semantic search."""

RANKED_MATCHES = 10_000
"""Most keyword candidates ranked per search, and the count past which a word gets the floor IDF: the API's
and `headrace search`'s bound on keyword ranking work (`store.search.search()` itself ranks every match
unless told this bound)."""
