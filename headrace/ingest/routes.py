"""The worker API, version 1: one route per store call of `WorkerStore`, each on the caller's own job.

Every route does what `DirectStore` does for a worker in local mode, on the job the caller's token
belongs to (`deps.job_store`); every id in a path or body, run numbers included, is checked by
`DirectStore` to be that job's (`ForeignId`, answered 404). Bodies and answers are `headrace.worker.wire`'s
models: each route is its one store call, returning its answer's model, which `AnswerRoute` serializes.
"""

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response
from fastapi.routing import APIRoute

from headrace.api.problems import ProblemError, responses
from headrace.ingest.deps import StoreDep
from headrace.store import queue, vectors
from headrace.worker import wire
from headrace.worker.store import DirectStore


def _answering(endpoint: Callable[..., Awaitable[wire.Answer | None]]) -> Callable[..., Awaitable[Response]]:
    """The endpoint, its answer serialized once as JSON (`{}` for none): FastAPI would validate a returned
    model again. FastAPI still reads the endpoint's parameters and its answer's schema (`-> wire.X`)
    through the wrapper."""

    @functools.wraps(endpoint)
    async def answer(*args: Any, **kwargs: Any) -> Response:
        body = await endpoint(*args, **kwargs)
        content = b"{}" if body is None else body.model_dump_json(by_alias=True)
        return Response(content, media_type="application/json")

    return answer


class AnswerRoute(APIRoute):
    """A worker API route: its endpoint does its one piece of work and returns the answer's model."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _answering(endpoint), **kwargs)


router = APIRouter(
    prefix=f"/{wire.API_VERSION}/jobs/{{job_uid}}",
    tags=["worker"],
    responses=responses(401, 403, 404, 413, 422, 429, 503),
    route_class=AnswerRoute,
)

RunPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="A run number of the job.")]
IdPath = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def _space(store: DirectStore, space_id: int | None) -> vectors.Space | None:
    return await store.space(space_id) if space_id is not None else None


def _held(store: DirectStore, task_id: int, lease_token: uuid.UUID) -> queue.Task:
    """The task of the path's id that the caller says it holds."""
    [task] = wire.held([wire.HeldTask(id=task_id, lease_token=lease_token)], store.job_uid)
    return task


# --- the job ------------------------------------------------------------------------------------------


@router.get("", summary="The job, as the worker reads it at start")
async def get_job(store: StoreDep) -> wire.JobBody:
    job = await store.get_job()
    if job is None:
        raise ProblemError(404, f"job {store.job_uid} was deleted")
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return wire.JobBody(
        uid=job.uid,
        namespace=job.namespace,
        name=job.name,
        generation=job.generation,
        spec=spec,
        current_run=job.current_run,
        namespace_uid=job.namespace_uid,
    )


@router.get("/vector-space", summary="The vector space of the job's model")
async def vector_space(store: StoreDep) -> wire.SpaceAnswer:
    return wire.SpaceAnswer(space=await store.vector_space())


# --- the queue ----------------------------------------------------------------------------------------


@router.post("/leases", summary="Ack finished tasks and lease more")
async def lease(body: wire.LeaseRequest, store: StoreDep) -> wire.LeaseAnswer:
    acks = wire.held(body.acks, store.job_uid)
    acked, leased = await store.lease(acks, worker=body.worker, lease_seconds=body.lease_seconds, limit=body.limit)
    return wire.LeaseAnswer(acked=sorted(acked), leased=leased)


@router.post("/acks", summary="Ack finished tasks")
async def ack(body: wire.AckRequest, store: StoreDep) -> wire.AckAnswer:
    return wire.AckAnswer(acked=sorted(await store.ack(wire.held(body.tasks, store.job_uid))))


@router.post("/heartbeats", summary="Extend the leases held")
async def heartbeat(body: wire.HeartbeatRequest, store: StoreDep) -> wire.HeartbeatAnswer:
    kept = await store.heartbeat(wire.held(body.tasks, store.job_uid), lease_seconds=body.lease_seconds)
    return wire.HeartbeatAnswer(kept=sorted(kept))


@router.post("/tasks/{task_id}/failure", summary="Record a failed attempt")
async def fail(task_id: IdPath, body: wire.FailRequest, store: StoreDep) -> wire.FailAnswer:
    task = _held(store, task_id, body.lease_token)
    outcome = await store.fail(task, body.error, backoff=body.backoff_seconds, permanent=body.permanent)
    return wire.FailAnswer(outcome=outcome)


@router.post("/tasks/{task_id}/release", summary="Hand a task back unprocessed")
async def release(task_id: IdPath, body: wire.ReleaseRequest, store: StoreDep) -> wire.ReleaseAnswer:
    return wire.ReleaseAnswer(released=await store.release(_held(store, task_id, body.lease_token)))


@router.post("/expired-leases", summary="Dead-letter tasks whose last lease expired")
async def reap_expired(store: StoreDep) -> wire.TasksAnswer:
    return wire.TasksAnswer(tasks=await store.reap_expired())


@router.get("/drained", summary="Whether no task is pending or leased")
async def drained(store: StoreDep) -> wire.DrainedAnswer:
    return wire.DrainedAnswer(drained=await store.is_drained())


@router.post("/runs/{run}/finish", summary="Close the drained run")
async def finish_run(run: RunPath, store: StoreDep) -> wire.FinishedAnswer:
    return wire.FinishedAnswer(finished=await store.finish_run(run))


@router.post(
    "/runs/{run}/discovered",
    summary="Enqueue discovered batches and the count so far, in one transaction",
    responses=responses(409),
)
async def discovered(run: RunPath, body: wire.DiscoveredRequest, store: StoreDep) -> None:
    """409 when `run` is no longer the job's current run (a newer run started)."""
    tasks = [t.new_task() for t in body.tasks]
    await store.enqueue_discovered(run, tasks, max_attempts=body.max_attempts, total=body.total, done=body.done)


# --- documents ----------------------------------------------------------------------------------------


@router.post("/documents/known", summary="What the index holds of these URIs")
async def known(body: wire.UrisRequest, store: StoreDep) -> wire.KnownAnswer:
    return wire.KnownAnswer(documents=list((await store.known(body.uris)).values()))


@router.post("/runs/{run}/processed", summary="Which URIs the run has recorded")
async def processed(run: RunPath, body: wire.UrisRequest, store: StoreDep) -> wire.UrisAnswer:
    return wire.UrisAnswer(uris=sorted(await store.processed_in_run(run, body.uris)))


@router.post("/documents/entry-hashes", summary="An archive's entries' hashes")
async def entry_hashes(body: wire.EntryHashesRequest, store: StoreDep) -> wire.EntryHashesAnswer:
    return wire.EntryHashesAnswer(hashes=await store.entry_hashes(body.uri, body.fingerprint))


@router.post(
    "/runs/{run}/documents", summary="Store a group of documents with their chunks and vectors, in one transaction"
)
async def store_documents(run: RunPath, body: wire.StoreRequest, store: StoreDep) -> wire.StoreAnswer:
    """Each document is written whole, or refused with its reason (`refused`) while the others are written."""
    docs = []
    for index, document in enumerate(body.documents):
        try:
            docs.append(document.record())
        except ValueError as exc:
            raise ProblemError(422, f"body.documents[{index}].vectors: {exc}") from exc
    written = await store.store_documents(run, docs, space=await _space(store, body.space_id))
    return wire.StoreAnswer(outcomes=written.outcomes, refused=written.refused)


@router.post("/runs/{run}/outcomes", summary="Record unchanged and failed documents, and new change markers")
async def outcomes(run: RunPath, body: wire.OutcomesRequest, store: StoreDep) -> None:
    await store.record_outcomes(
        run,
        unchanged=body.unchanged,
        unchanged_archives=body.unchanged_archives,
        versions=body.versions,
        failures=body.failures,
    )


# --- re-embedding kept documents ------------------------------------------------------------------------


@router.post("/documents/stale-embeddings", summary="Documents to re-embed")
async def stale_embeddings(body: wire.StaleRequest, store: StoreDep) -> wire.StaleAnswer:
    stale = await store.stale_embeddings(await _space(store, body.space_id), body.uris, body.archives)
    return wire.StaleAnswer(documents=[wire.DocumentRef(id=i, uri=u) for i, u in stale])


@router.post("/runs/{run}/documents/{document_id}/drop-vectors", summary="Remove a document's vectors")
async def drop_vectors(run: RunPath, document_id: IdPath, store: StoreDep) -> wire.OutcomeAnswer:
    return wire.OutcomeAnswer(outcome=await store.drop_vectors(run, document_id))


@router.post(
    "/documents/{document_id}/chunks-to-embed", summary="A document's chunks still lacking a vector in a space"
)
async def chunks_to_embed(document_id: IdPath, body: wire.SpaceRequest, store: StoreDep) -> wire.ChunksAnswer:
    title, chunks = await store.chunks_to_embed(document_id, await store.space(body.space_id))
    return wire.ChunksAnswer(title=title, chunks=[wire.ChunkText(id=i, content=c) for i, c in chunks])


@router.post("/chunk-vectors", summary="Give chunks their vector in a space")
async def chunk_vectors(body: wire.ChunkVectorsRequest, store: StoreDep) -> None:
    try:
        vecs = wire.decode_vectors(body.vectors, len(body.chunk_ids))
    except ValueError as exc:
        raise ProblemError(422, f"body.vectors: {exc}") from exc
    space = await store.space(body.space_id)
    if any(len(v) != space.dimensions for v in vecs):
        raise ProblemError(422, f"body.vectors: vectors of space {space.id} have {space.dimensions} dimensions")
    await store.store_chunk_vectors(space, body.chunk_ids, vecs)


@router.post("/runs/{run}/documents/{document_id}/reembedded", summary="Record a document as re-embedded")
async def reembedded(run: RunPath, document_id: IdPath, body: wire.SpaceRequest, store: StoreDep) -> wire.OutcomeAnswer:
    outcome = await store.finish_reembed(run, document_id, await store.space(body.space_id))
    return wire.OutcomeAnswer(outcome=outcome)
