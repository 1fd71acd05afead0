"""Passages for RAG: a chunk with its neighbours, and a document's chunks in order."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from headrace.api.deps import JobNamePath, NamespaceDep, PoolDep
from headrace.api.problems import ProblemError, responses
from headrace.api.routes.jobs import job_or_404
from headrace.api.schemas import Cursor, DocumentPassages, Passage, PassageContext, UriPrefix
from headrace.store import cursors
from headrace.store import passages as store

router = APIRouter(
    prefix="/v1/namespaces/{ns}/ingestionjobs/{name}",
    tags=["passages"],
    responses=responses(400, 401, 403, 404, 422, 429, 503),
)

MAX_CONTEXT = 20


def _passages(found: store.DocumentPassages) -> list[Passage]:
    return [
        Passage(chunk_id=p.chunk_id, chunk=p.ordinal, page=p.page, heading_path=p.heading_path, text=p.text)
        for p in found.passages
    ]


@router.get("/chunks/{chunk_id}", summary="A chunk with its neighbours in the same document")
async def chunk_with_context(
    ns: NamespaceDep,
    name: JobNamePath,
    pool: PoolDep,
    chunk_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="`chunkId` of a search hit.")],
    context: Annotated[int, Query(ge=0, le=MAX_CONTEXT, description="Chunks to include on each side.")] = 1,
) -> PassageContext:
    view = await job_or_404(pool, ns, name)
    found = await store.with_neighbours(pool, view.uid, chunk_id, context)
    if found is None:
        raise ProblemError(404, f"ingestionjob {ns}/{name} has no chunk {chunk_id}")
    return PassageContext(
        uri=found.uri, title=found.title, metadata=found.metadata, chunk_id=chunk_id, passages=_passages(found)
    )


@router.get("/passages", summary="A document's chunks in order")
async def document_passages(
    ns: NamespaceDep,
    name: JobNamePath,
    pool: PoolDep,
    uri: Annotated[UriPrefix, Query(min_length=1, description="The document's source URI, as search hits give it.")],
    limit: Annotated[int, Query(ge=1, le=500, description="Chunks per page.")] = 50,
    cursor: Annotated[Cursor | None, Query(description="`nextCursor` of the previous page.")] = None,
) -> DocumentPassages:
    view = await job_or_404(pool, ns, name)
    after = cursors.decode(cursor, int) if cursor else -1
    if not -1 <= after < 2**31:
        raise ProblemError(400, "cursor is not one this server returned")
    found = await store.of_document(pool, view.uid, uri, after_ordinal=after, limit=limit + 1)
    if found is None:
        raise ProblemError(404, f"ingestionjob {ns}/{name} has no ingested document {uri!r}")
    items = _passages(found)
    return DocumentPassages(
        uri=found.uri,
        title=found.title,
        metadata=found.metadata,
        chunks=found.chunk_count,
        passages=items[:limit],
        next_cursor=cursors.encode(items[limit - 1].chunk) if len(items) > limit else None,
    )
