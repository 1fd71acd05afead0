"""Re-scoring of a search's first hits by the platform's cross-encoder (`POST {url}/rerank`).

The reranker is configured on the API (`HEADRACE_RERANK_URL`), never named by a request: tenants are
hostile, and an API that POSTs to a URL a caller chose is an SSRF. It is an improvement, not a
dependency: whatever goes wrong (slow, down, an error status, an answer that does not fit the
question), `rerank` returns why instead of raising, and the search answers its own order.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from prometheus_client import Counter, Histogram

from headrace.api.settings import ApiSettings, RerankApi
from headrace.keepalive import CONNECTIONS

log = logging.getLogger(__name__)

RERANKS = Counter(
    "headrace_rerank_total",
    "Searches the reranker was asked to re-score, by outcome "
    "(applied, timeout, unreachable, status, malformed; all but applied answered the search's own order).",
    ["outcome"],
)
RERANK_SECONDS = Histogram(
    "headrace_rerank_duration_seconds",
    "Time the reranker took to answer (or to be given up on).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


@dataclass(frozen=True)
class Reranked:
    """The reranker's verdict: (index into the documents sent, score), best first."""

    order: list[tuple[int, float]]


@dataclass(frozen=True)
class Skipped:
    """Why the search's own order stands; `reason` is safe to show the caller (no passage text)."""

    outcome: Literal["timeout", "unreachable", "status", "malformed"]
    reason: str


class Malformed(ValueError):
    """The reranker answered 2xx with something that does not score the documents sent."""


def request_body(api: RerankApi, model: str | None, query: str, documents: list[str], top_n: int) -> dict[str, Any]:
    """The body of `POST {url}/rerank`: Cohere's shape (Jina, vLLM, Infinity speak it too), or
    Hugging Face TEI's, which names the documents `texts`, has no `top_n` and refuses over-long
    inputs unless told to truncate them."""
    if api == "tei":
        return {"query": query, "texts": documents, "truncate": True}
    body: dict[str, Any] = {"query": query, "documents": documents, "top_n": top_n}
    if model:
        body["model"] = model
    return body


def parse_answer(answer: Any, *, documents: int, top_n: int) -> list[tuple[int, float]]:
    """(index, score) pairs best first, from Cohere's `{"results": [{"index", "relevance_score"}]}`
    or TEI's `[{"index", "score"}]`. Raises Malformed unless every index is a distinct document
    sent, every score a finite number, and at least `min(top_n, documents)` of them came back."""
    rows = answer.get("results") if isinstance(answer, dict) else answer
    if not isinstance(rows, list):
        raise Malformed("the answer holds no list of results")
    scored: dict[int, float] = {}
    for row in rows:
        if not isinstance(row, dict):
            raise Malformed("a result is not an object")
        index = row.get("index")
        score = row.get("relevance_score", row.get("score"))
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < documents or index in scored:
            raise Malformed(f"a result's index is not a distinct one of the {documents} documents sent")
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            raise Malformed("a result's score is not a finite number")
        scored[index] = float(score)
    if len(scored) < min(top_n, documents):
        raise Malformed(f"{len(scored)} results for {documents} documents, top_n {top_n}")
    return sorted(scored.items(), key=lambda pair: (-pair[1], pair[0]))


class Reranker:
    """One shared HTTP client to the platform's reranker, opened and closed by the API's lifespan."""

    def __init__(self, settings: ApiSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert settings.rerank_url is not None
        self.url = settings.rerank_url.rstrip("/") + "/rerank"
        self.api: RerankApi = settings.rerank_api
        self.model = settings.rerank_model
        self.candidates = settings.rerank_candidates
        self.timeout_ms = settings.rerank_timeout_ms
        key = settings.rerank_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        seconds = self.timeout_ms / 1000
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=seconds,
            transport=transport,
            follow_redirects=False,
            limits=CONNECTIONS,
        )
        self._failing: str | None = None  # the cause last logged, so an outage logs once

    async def aclose(self) -> None:
        await self._client.aclose()

    async def rerank(self, query: str, documents: list[str], *, top_n: int) -> Reranked | Skipped:
        """The reranker's order of `documents` for `query`, or why there is none, within the timeout."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_ms / 1000):
                response = await self._client.post(
                    self.url, json=request_body(self.api, self.model, query, documents, top_n)
                )
            if response.status_code >= 300:
                verdict: Reranked | Skipped = Skipped("status", f"the reranker answered {response.status_code}")
            else:
                verdict = Reranked(parse_answer(response.json(), documents=len(documents), top_n=top_n))
        except (TimeoutError, httpx.TimeoutException):
            verdict = Skipped("timeout", f"timeout after {self.timeout_ms} ms")
        except httpx.HTTPError as exc:
            verdict = Skipped("unreachable", f"the reranker is unreachable ({type(exc).__name__})")
        except (Malformed, ValueError) as exc:  # ValueError: a body that is not JSON
            verdict = Skipped("malformed", f"the reranker's answer is malformed: {exc}"[:200])
        RERANK_SECONDS.observe(time.perf_counter() - started)
        self._record(verdict)
        return verdict

    def _record(self, verdict: Reranked | Skipped) -> None:
        """Count the outcome; log a failure once per cause (an outage is one warning, not one a search)
        and the recovery after it. Never the query or the passages: they are tenants' data."""
        if isinstance(verdict, Reranked):
            RERANKS.labels("applied").inc()
            if self._failing is not None:
                log.info("Reranker recovered", extra={"url": self.url})
                self._failing = None
            return
        RERANKS.labels(verdict.outcome).inc()
        if self._failing != verdict.outcome:
            self._failing = verdict.outcome
            log.warning(
                "Skipped reranking: searches answer their own order until the reranker recovers",
                extra={"url": self.url, "outcome": verdict.outcome, "reason": verdict.reason},
            )
