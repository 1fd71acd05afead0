"""API settings from the environment (prefix `HEADRACE_`), validated once at startup."""

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, StringConstraints, model_validator

from headrace.kubeapi import KubeSettings
from headrace.model import search_defaults
from headrace.settings import DatabaseSettings, ListenSettings

AuthMode = Literal["kubernetes", "token", "none"]
RerankApi = Literal["cohere", "tei"]


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiSettings(DatabaseSettings, ListenSettings, KubeSettings):
    """Everything `headrace api` can be told. Field `x_y` is read from `HEADRACE_X_Y`."""

    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    """Connections one API process opens to Postgres at most."""

    database_acquire_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Longest a request waits for a free database connection before it is answered 503 with Retry-After."""

    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Port of the Prometheus metrics, apart from the API's (None: not served; 0: any free port).
    Scrapers need no API access, and a NetworkPolicy can admit only Prometheus to it."""

    metrics_host: str | None = None
    """Address the metrics port binds to; defaults to `listen_host`."""

    metrics_refresh_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0
    """How often the Postgres totals behind the metrics are read; a scrape reads none."""

    auth_mode: AuthMode = "kubernetes"
    """kubernetes: TokenReview + SubjectAccessReview; token: one static bearer token; none: loopback only."""

    auth_token: SecretStr | None = None
    """The static token of `auth_mode: token`, when not read from `auth_token_file`."""

    auth_token_file: Path | None = None
    """File holding the static token of `auth_mode: token` (a mounted Secret)."""

    auth_cache_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    """How long TokenReview and SubjectAccessReview answers are reused."""

    auth_audiences: list[str] = []
    """Audiences a token must be issued for (TokenReview `spec.audiences`); empty means the API server's."""

    rate_limit_per_second: Annotated[float, Field(ge=0)] = 20.0
    """Sustained requests per second per principal; 0 turns rate limiting off."""

    rate_limit_burst: Annotated[int, Field(ge=1)] = 40
    """Requests a principal may make at once before the sustained rate applies."""

    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    """Largest request body (413), counted as it arrives, so a chunked body is cut off too."""

    max_query_chars: Annotated[int, Field(ge=256)] = 4096
    """Longest accepted URL query string."""

    header_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Longest a request's line and headers may take to arrive, from the connection or the previous
    answer on it; then the connection is closed."""

    body_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Longest a request's body may take to arrive after its headers; then a 408 and the connection is
    closed."""

    max_connections: Annotated[int, Field(ge=1)] = 2000
    """Open connections (or requests under way) past which a new request is answered 503 problem+json,
    with Retry-After. Open event streams count: keep it above `events_max_streams`. Stalled connections are
    closed by the timeouts above."""

    search_timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = search_defaults.TIMEOUT_MS
    """Postgres `statement_timeout` of one search."""

    search_max_limit: Annotated[int, Field(ge=1, le=1000)] = search_defaults.MAX_LIMIT
    """Most hits one search page may ask for (`limit`); more is a 400."""

    search_candidates: Annotated[int, Field(ge=10, le=10_000)] = search_defaults.CANDIDATES
    """Hits of each ranking (keyword, semantic) that hybrid search fuses. Hybrid pages end there."""

    search_ranked_matches: Annotated[int | None, Field(ge=100)] = search_defaults.RANKED_MATCHES
    """Most keyword candidates ranked per search, and the count past which a word gets the floor IDF
    (null: every match, counted exactly). A word found in half of a million chunks would otherwise
    have all of them read and ranked; capped, candidates come from the rarest words first. A bounded
    search ranks from the jobs' search statistics first, when they have current ones
    (operations.md, "Search statistics"). benchmarks.md measures what it costs in quality."""

    search_ef_search: Annotated[int, Field(ge=10, le=1000)] = search_defaults.EF_SEARCH
    """pgvector `hnsw.ef_search`: candidates the HNSW index visits per semantic search; higher finds
    more of the true nearest neighbours, slower."""

    rerank_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)] | None = None
    """Base URL of the platform's reranker (a cross-encoder server: TEI, vLLM, Infinity, Jina, Cohere);
    searches POST to `{url}/rerank`. None: reranking is unavailable, and asking for it is a 400.
    Set here by the platform only, never by a request (docs/api.md, "Reranking")."""

    rerank_api: RerankApi = "cohere"
    """The reranker's request shape: `cohere` (`documents`, `top_n`, `model`: Cohere, Jina, vLLM, Infinity)
    or `tei` (Hugging Face Text Embeddings Inference: `texts`). Both answer shapes are read either way."""

    rerank_model: str | None = None
    """The `model` sent with each rerank request (servers serving one model ignore it)."""

    rerank_api_key: SecretStr | None = None
    """Bearer token sent to the reranker, from a Secret (chart: `api.rerank.apiKeySecret`)."""

    rerank_candidates: Annotated[int, Field(ge=1, le=1000)] = 30
    """K: the search's first K hits (at least `limit`) are re-scored, and the page is their `limit` best."""

    rerank_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 1000
    """Longest a search waits for the reranker; then it answers its own order, with a
    `Headrace-Rerank: skipped` header."""

    rerank_default: bool = False
    """Whether searches that don't say `rerank` are reranked (needs `rerank_url`)."""

    events_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How often an event stream looks for news in Postgres."""

    events_ping_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0
    """Keep-alive comment interval of event streams, so proxies don't cut idle ones."""

    events_max_streams: Annotated[int, Field(ge=1)] = 1000
    """Event streams one API process holds open at most; more get a 503 with Retry-After."""

    events_max_streams_per_caller: Annotated[int, Field(ge=1)] = 20
    """Event streams one caller (principal) may hold open on one API process; more get a 429."""

    events_recheck_seconds: Annotated[float, Field(gt=0, le=3600)] = 180.0
    """How often an open event stream checks again that its caller's token is valid and may still read
    the namespace; the stream ends when either is no longer so."""

    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=300)] = 10.0
    """On SIGTERM, how long open requests and event streams get before they are closed."""

    @model_validator(mode="after")
    def _coherent(self) -> "ApiSettings":
        if self.auth_mode == "none" and not is_loopback(self.listen_host):
            raise ValueError(
                f"auth mode 'none' serves every namespace to anyone: it is only allowed on a loopback address, "
                f"not {self.listen_host!r}"
            )
        if self.auth_mode == "token" and not (self.auth_token or self.auth_token_file):
            raise ValueError("auth mode 'token' needs HEADRACE_AUTH_TOKEN or HEADRACE_AUTH_TOKEN_FILE")
        if self.rerank_default and self.rerank_url is None:
            raise ValueError("HEADRACE_RERANK_DEFAULT needs HEADRACE_RERANK_URL: there is no reranker to default to")
        return self
