"""Search over chunks of every namespace the caller may read."""

import time
from typing import Annotated

from asyncpg.exceptions import DataError, QueryCanceledError
from fastapi import APIRouter, Query

from headrace.api import auth
from headrace.api.deps import PoolDep, PrincipalDep, ServicesDep
from headrace.api.metrics import SEARCH_SECONDS
from headrace.api.problems import ProblemError, responses
from headrace.api.schemas import (
    Cursor,
    JobName,
    Namespace,
    SearchHit,
    SearchRequest,
    SearchResults,
    UriPrefix,
)
from headrace.api.schemas import Query as SearchQuery
from headrace.store import jobs, snippets
from headrace.store import search as store
from headrace.store.db import Pool

router = APIRouter(prefix="/v1/search", tags=["search"], responses=responses(400, 401, 403, 422, 429, 503, 504))

_SEARCH_DOC = """\
Full-text search in Postgres `websearch_to_tsquery` syntax (`"a phrase"`, `or`, `-excluded`), ranked with
`ts_rank_cd`, with `ts_headline` snippets. Only namespaces the caller may `get` `ingestionjobs` in are searched.
Pages are keyset-paginated: pass `nextCursor` back as `cursor`; documents ingested meanwhile never repeat or
skip a hit that was already ranked above the cursor.
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
    return await auth.readable(services.auth, principal, await jobs.namespaces(pool))


async def _search(
    services: ServicesDep, principal: auth.Principal, pool: Pool, request: SearchRequest
) -> SearchResults:
    settings = services.settings
    if request.limit > settings.search_max_limit:
        raise ProblemError(400, f"limit must be at most {settings.search_max_limit}")
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
            limit=request.limit,
            cursor=request.cursor,
            timeout_ms=settings.search_timeout_ms,
        )
    except (store.InvalidCursor, DataError, OverflowError) as exc:
        # A cursor decodes to values Postgres must accept; a forged one can fail to, which is the caller's error.
        raise ProblemError(400, "cursor is not one this server returned") from exc
    except QueryCanceledError as exc:
        raise ProblemError(504, f"the search took longer than {settings.search_timeout_ms} ms; narrow it") from exc
    finally:
        SEARCH_SECONDS.observe(time.perf_counter() - started)
    return SearchResults(
        items=[
            SearchHit(
                uri=h.uri,
                title=h.title,
                namespace=h.namespace,
                job=h.job,
                chunk=h.ordinal,
                page=h.page,
                score=h.score,
                snippet=snippets.render(h.snippet, request.highlight),
            )
            for h in page.hits
        ],
        next_cursor=page.next_cursor,
    )


@router.get("", summary="Search passages", description=_SEARCH_DOC)
async def search_get(
    services: ServicesDep,
    principal: PrincipalDep,
    pool: PoolDep,
    q: Annotated[SearchQuery, Query(description="Words in websearch syntax.", examples=['"hacker ethic"'])],
    namespace: Annotated[list[Namespace] | None, Query(max_length=100, description="Only these namespaces.")] = None,
    job: Annotated[JobName | None, Query(description="Only jobs of this name.")] = None,
    prefix: Annotated[UriPrefix | None, Query(description="Only source URIs starting with this.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    cursor: Annotated[Cursor | None, Query(description="`nextCursor` of the previous page.")] = None,
    highlight: Annotated[
        snippets.Highlight,
        Query(description="`html`: snippets HTML-escaped, matches in `<mark>`; `none`: plain text."),
    ] = "html",
) -> SearchResults:
    request = SearchRequest(
        q=q, namespaces=namespace, job=job, uri_prefix=prefix, limit=limit, cursor=cursor, highlight=highlight
    )
    return await _search(services, principal, pool, request)


@router.post("", summary="Search passages with structured filters", description=_SEARCH_DOC)
async def search_post(
    services: ServicesDep, principal: PrincipalDep, pool: PoolDep, request: SearchRequest
) -> SearchResults:
    return await _search(services, principal, pool, request)
