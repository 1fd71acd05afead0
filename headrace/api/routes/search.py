"""Search over chunks of every namespace the caller may read."""

import json
import time
from dataclasses import replace
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Response

from headrace.api import auth
from headrace.api.deps import PoolDep, PrincipalDep, ServicesDep
from headrace.api.metrics import SEARCH_SECONDS
from headrace.api.problems import ProblemError, responses
from headrace.api.rerank import Reranker, Skipped
from headrace.api.schemas import (
    MAX_QUERY_BYTES,
    Cursor,
    GetQuery,
    JobName,
    Namespace,
    SearchHit,
    SearchMode,
    SearchRequest,
    SearchResults,
    UriPrefix,
)
from headrace.embedding.query import EndpointModel, NoDirection, WrongDimensions, query_vector
from headrace.store import cursors, jobs
from headrace.store import search as store
from headrace.store.db import Pool
from headrace.store.errors import DataError
from headrace.store.search import snippets

RERANK_HEADER = "Headrace-Rerank"
"""On a search that asked for reranking: `applied`, or `skipped; reason="..."` (then the order is the search's)."""

router = APIRouter(prefix="/v1/search", tags=["search"], responses=responses(400, 401, 403, 422, 429, 503, 504))

_SEARCH_DOC = """\
Search passages by `mode`: `keyword` (Postgres full text: any of the words, ranked by BM25; `websearch_to_tsquery`
operators match as written), `semantic` (cosine similarity of embeddings in pgvector) or `hybrid` (both, fused by
a weighted sum of their scores), by default hybrid when the searched jobs have embeddings. Each hit carries the
chunk's whole `text`, a highlighted snippet, its position, document title, URI and metadata. Only namespaces the
caller may `get` `ingestionjobs` in are searched. Pages are keyset-paginated: pass `nextCursor` back as `cursor`.
"""


async def _scope(
    services: ServicesDep, principal: auth.Principal, pool: Pool, asked: list[str] | None
) -> list[str] | None:
    """The namespaces to search: those asked for (each must be readable), else every readable one."""
    if asked:
        for namespace in asked:
            if not await services.auth.may_read(principal, namespace):
                raise auth.Forbidden(principal, namespace)
        return sorted(set(asked))
    return await auth.readable(services.auth, principal, partial(jobs.namespaces, pool))


def _wants_rerank(services: ServicesDep, request: SearchRequest) -> bool:
    """Whether to rerank: as asked, else the API's default. A page asked with a cursor continues an
    unreranked list (a reranked answer is one page and returns none), so the default skips it."""
    if request.rerank is None:
        return services.settings.rerank_default and request.cursor is None
    if request.rerank and services.reranker is None:
        raise ProblemError(400, "rerank: this API has no reranker configured (HEADRACE_RERANK_URL); omit rerank")
    if request.rerank and request.cursor is not None:
        raise ProblemError(400, "rerank: a reranked search answers one page and takes no cursor")
    return request.rerank


async def _reranked(
    reranker: Reranker, request: SearchRequest, hits: list[store.SearchHit], response: Response
) -> list[store.SearchHit]:
    """The `limit` best of `hits` by the reranker, scored by it; else the first `limit` as they are.
    The `Headrace-Rerank` header says which."""
    if not hits:
        response.headers[RERANK_HEADER] = "applied"
        return hits
    verdict = await reranker.rerank(request.q, [h.text for h in hits], top_n=request.limit)
    if isinstance(verdict, Skipped):
        response.headers[RERANK_HEADER] = f"skipped; reason={json.dumps(verdict.reason)}"
        return hits[: request.limit]
    response.headers[RERANK_HEADER] = "applied"
    return [replace(hits[index], score=score) for index, score in verdict.order[: request.limit]]


async def _search(
    services: ServicesDep, principal: auth.Principal, pool: Pool, request: SearchRequest, response: Response
) -> SearchResults:
    settings = services.settings
    if request.limit > settings.search_max_limit:
        raise ProblemError(400, f"limit must be at most {settings.search_max_limit}")
    if len(request.q.encode()) > MAX_QUERY_BYTES:
        raise ProblemError(400, f"q is {len(request.q.encode())} bytes long; at most {MAX_QUERY_BYTES}")
    if not request.q.strip():
        raise ProblemError(400, "q is empty: give words or a question")
    rerank = _wants_rerank(services, request)
    namespaces = await _scope(services, principal, pool, request.namespaces)
    where = store.SearchFilter(
        namespaces=namespaces, job=request.job, uri_prefix=request.uri_prefix, metadata=request.metadata
    )
    started = time.perf_counter()
    try:
        page = await store.search(
            pool,
            request.q,
            where=where,
            limit=max(request.limit, settings.rerank_candidates) if rerank else request.limit,
            cursor=request.cursor,
            timeout_ms=settings.search_timeout_ms,
            mode=request.mode,
            embed=partial(query_vector, given=request.vector),
            candidates=settings.search_candidates,
            ef_search=settings.search_ef_search,
            ranked_matches=settings.search_ranked_matches,
        )
    except (store.SearchRefused, WrongDimensions, NoDirection) as exc:
        raise ProblemError(400, str(exc)) from exc
    except EndpointModel as exc:
        raise ProblemError(
            400,
            f"the searched jobs are embedded by the endpoint model {exc.model}: embed q with it and pass `vector` "
            "(the API does not call tenants' endpoints), or use mode keyword",
        ) from exc
    except (cursors.InvalidCursor, DataError, OverflowError) as exc:
        # A cursor decodes to values Postgres must accept; a forged one can fail to, which is the caller's error.
        raise ProblemError(400, "cursor is not one this server returned") from exc
    except store.SearchTimedOut as exc:
        raise ProblemError(504, f"{exc}: narrow it to fewer jobs or documents with namespace, job or prefix") from exc
    finally:
        SEARCH_SECONDS.observe(time.perf_counter() - started)
    hits, next_cursor = page.hits, page.next_cursor
    if rerank:
        assert services.reranker is not None  # _wants_rerank said so
        hits, next_cursor = await _reranked(services.reranker, request, hits, response), None
    return SearchResults(
        items=[
            SearchHit(
                uri=h.uri,
                title=h.title,
                namespace=h.namespace,
                job=h.job,
                chunk=h.ordinal,
                page=h.page,
                heading_path=h.heading_path,
                chunk_id=h.chunk_id,
                score=h.score,
                snippet=snippets.render(h.snippet, request.highlight),
                text=h.text,
                metadata=h.metadata,
            )
            for h in hits
        ],
        mode=page.mode,
        next_cursor=next_cursor,
    )


@router.get("", summary="Search passages", description=_SEARCH_DOC)
async def search_get(
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    pool: PoolDep,
    q: Annotated[GetQuery, Query(description="Words in websearch syntax, or a question.", examples=['"hacker ethic"'])],
    mode: Annotated[
        SearchMode | None,
        Query(description="keyword, semantic or hybrid (default: hybrid when the jobs have embeddings)."),
    ] = None,
    namespace: Annotated[list[Namespace] | None, Query(max_length=100, description="Only these namespaces.")] = None,
    job: Annotated[JobName | None, Query(description="Only jobs of this name.")] = None,
    prefix: Annotated[UriPrefix | None, Query(description="Only source URIs starting with this.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    cursor: Annotated[Cursor | None, Query(description="`nextCursor` of the previous page.")] = None,
    highlight: Annotated[
        snippets.Highlight,
        Query(description="`html`: snippets HTML-escaped, matches in `<mark>`; `none`: plain text."),
    ] = "html",
    rerank: Annotated[
        bool | None,
        Query(
            description="Re-score the first hits by the platform's reranker and answer one page of its best "
            "(default: as the API is configured); the `Headrace-Rerank` header says whether it was applied."
        ),
    ] = None,
) -> SearchResults:
    request = SearchRequest(
        q=q,
        mode=mode,
        namespaces=namespace,
        job=job,
        uri_prefix=prefix,
        limit=limit,
        cursor=cursor,
        highlight=highlight,
        rerank=rerank,
    )
    return await _search(services, principal, pool, request, response)


@router.post("", summary="Search passages with structured filters", description=_SEARCH_DOC)
async def search_post(
    response: Response, services: ServicesDep, principal: PrincipalDep, pool: PoolDep, request: SearchRequest
) -> SearchResults:
    return await _search(services, principal, pool, request, response)
