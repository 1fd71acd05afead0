"""The worker API, version 1: one route per store call of `WorkerStore`, each on the caller's own job.

Every route does what `DirectStore` does for a worker in local mode, on the job the caller's token
belongs to (`deps.job_store`); every id in a path or body is checked to be that job's (`ForeignId`,
answered 404). Bodies and answers are `headrace.worker.wire`'s models.
"""

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from headrace.api.problems import ProblemError, responses
from headrace.ingest.deps import StoreDep
from headrace.store import vectors
from headrace.worker import wire
from headrace.worker.store import DirectStore

router = APIRouter(
    prefix=f"/{wire.API_VERSION}/jobs/{{job_uid}}",
    tags=["worker"],
    responses=responses(401, 403, 404, 413, 422, 429, 503),
)

RunPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="A run number of the job.")]
IdPath = Annotated[int, Path(ge=1, le=2**63 - 1)]

_EMPTY = Response(b"{}", media_type="application/json")


def _answer(body: wire.Answer) -> Response:
    """The body as JSON, serialized once (FastAPI would validate a returned model again)."""
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")


async def _space(store: DirectStore, space_id: int | None) -> vectors.Space | None:
    return await store.space(space_id) if space_id is not None else None


# --- the job ------------------------------------------------------------------------------------------


@router.get("", response_model=wire.JobBody, summary="The job, as the worker reads it at start")
async def get_job(store: StoreDep) -> Response:
    job = await store.get_job()
    if job is None:
        raise ProblemError(404, f"job {store.job_uid} was deleted")
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _answer(
        wire.JobBody(
            uid=job.uid,
            namespace=job.namespace,
            name=job.name,
            generation=job.generation,
            spec=spec,
            current_run=job.current_run,
            namespace_uid=job.namespace_uid,
        )
    )


@router.get("/vector-space", response_model=wire.SpaceAnswer, summary="The vector space of the job's model")
async def vector_space(store: StoreDep) -> Response:
    space = await store.vector_space()
    return _answer(wire.SpaceAnswer(space=wire.SpaceBody.of(space) if space is not None else None))


# --- the queue ----------------------------------------------------------------------------------------


@router.post("/leases", response_model=wire.LeaseAnswer, summary="Ack finished tasks and lease more")
async def lease(body: wire.LeaseRequest, store: StoreDep) -> Response:
    acked, leased = await store.lease(
        wire.held(body.acks, store.job_uid), worker=body.worker, lease_seconds=body.lease_seconds, limit=body.limit
    )
    return _answer(wire.LeaseAnswer(acked=sorted(acked), leased=[wire.TaskBody.of(t) for t in leased]))


@router.post("/acks", response_model=wire.AckAnswer, summary="Ack finished tasks")
async def ack(body: wire.AckRequest, store: StoreDep) -> Response:
    acked = await store.ack(wire.held(body.tasks, store.job_uid))
    return _answer(wire.AckAnswer(acked=sorted(acked)))


@router.post("/heartbeats", response_model=wire.HeartbeatAnswer, summary="Extend the leases held")
async def heartbeat(body: wire.HeartbeatRequest, store: StoreDep) -> Response:
    kept = await store.heartbeat(wire.held(body.tasks, store.job_uid), lease_seconds=body.lease_seconds)
    return _answer(wire.HeartbeatAnswer(kept=sorted(kept)))


@router.post("/tasks/{task_id}/failure", response_model=wire.FailAnswer, summary="Record a failed attempt")
async def fail(task_id: IdPath, body: wire.FailRequest, store: StoreDep) -> Response:
    [task] = wire.held([wire.HeldTask(id=task_id, lease_token=body.lease_token)], store.job_uid)
    outcome = await store.fail(task, body.error, backoff=body.backoff_seconds, permanent=body.permanent)
    return _answer(wire.FailAnswer(outcome=outcome))


@router.post("/tasks/{task_id}/release", response_model=wire.ReleaseAnswer, summary="Hand a task back unprocessed")
async def release(task_id: IdPath, body: wire.ReleaseRequest, store: StoreDep) -> Response:
    [task] = wire.held([wire.HeldTask(id=task_id, lease_token=body.lease_token)], store.job_uid)
    return _answer(wire.ReleaseAnswer(released=await store.release(task)))


@router.post("/expired-leases", response_model=wire.TasksAnswer, summary="Dead-letter tasks whose last lease expired")
async def reap_expired(store: StoreDep) -> Response:
    return _answer(wire.TasksAnswer(tasks=[wire.TaskBody.of(t) for t in await store.reap_expired()]))


@router.get("/drained", response_model=wire.DrainedAnswer, summary="Whether no task is pending or leased")
async def drained(store: StoreDep) -> Response:
    return _answer(wire.DrainedAnswer(drained=await store.is_drained()))


@router.post("/runs/{run}/finish", response_model=wire.FinishedAnswer, summary="Close the drained run")
async def finish_run(run: RunPath, store: StoreDep) -> Response:
    return _answer(wire.FinishedAnswer(finished=await store.finish_run(run)))


@router.post(
    "/runs/{run}/discovered",
    summary="Enqueue discovered batches and the count so far, in one transaction",
    responses=responses(409),
)
async def discovered(run: RunPath, body: wire.DiscoveredRequest, store: StoreDep) -> Response:
    """409 when `run` is no longer the job's current run (a newer run started)."""
    await store.enqueue_discovered(
        run,
        [t.new_task() for t in body.tasks],
        max_attempts=body.max_attempts,
        total=body.total,
        done=body.done,
    )
    return _EMPTY


# --- documents ----------------------------------------------------------------------------------------


@router.post("/documents/known", response_model=wire.KnownAnswer, summary="What the index holds of these URIs")
async def known(body: wire.UrisRequest, store: StoreDep) -> Response:
    found = await store.known(body.uris)
    return _answer(wire.KnownAnswer(documents=[wire.KnownBody(**vars(d)) for d in found.values()]))


@router.post("/runs/{run}/processed", response_model=wire.UrisAnswer, summary="Which URIs the run has recorded")
async def processed(run: RunPath, body: wire.UrisRequest, store: StoreDep) -> Response:
    return _answer(wire.UrisAnswer(uris=sorted(await store.processed_in_run(run, body.uris))))


@router.post("/documents/entry-hashes", response_model=wire.EntryHashesAnswer, summary="An archive's entries' hashes")
async def entry_hashes(body: wire.EntryHashesRequest, store: StoreDep) -> Response:
    return _answer(wire.EntryHashesAnswer(hashes=await store.entry_hashes(body.uri, body.fingerprint)))


@router.post(
    "/runs/{run}/documents",
    response_model=wire.StoreAnswer,
    summary="Store a group of documents with their chunks and vectors, in one transaction",
)
async def store_documents(run: RunPath, body: wire.StoreRequest, store: StoreDep) -> Response:
    """Each document is written whole, or refused with its reason (`refused`) while the others are written."""
    docs = []
    for index, document in enumerate(body.documents):
        try:
            docs.append(document.record())
        except ValueError as exc:
            raise ProblemError(422, f"body.documents[{index}].vectors: {exc}") from exc
    space = await _space(store, body.space_id)
    written = await store.store_documents(run, docs, space=space)
    return _answer(wire.StoreAnswer(outcomes=written.outcomes, refused=written.refused))


@router.post("/runs/{run}/outcomes", summary="Record unchanged and failed documents, and new change markers")
async def outcomes(run: RunPath, body: wire.OutcomesRequest, store: StoreDep) -> Response:
    await store.record_outcomes(
        run,
        unchanged=body.unchanged,
        unchanged_archives=body.unchanged_archives,
        versions=body.versions,
        failures=body.failures,
    )
    return _EMPTY


# --- re-embedding kept documents ------------------------------------------------------------------------


@router.post("/documents/stale-embeddings", response_model=wire.StaleAnswer, summary="Documents to re-embed")
async def stale_embeddings(body: wire.StaleRequest, store: StoreDep) -> Response:
    stale = await store.stale_embeddings(await _space(store, body.space_id), body.uris, body.archives)
    return _answer(wire.StaleAnswer(documents=[wire.DocumentRef(id=i, uri=u) for i, u in stale]))


@router.post(
    "/runs/{run}/documents/{document_id}/drop-vectors",
    response_model=wire.OutcomeAnswer,
    summary="Remove a document's vectors",
)
async def drop_vectors(run: RunPath, document_id: IdPath, store: StoreDep) -> Response:
    return _answer(wire.OutcomeAnswer(outcome=await store.drop_vectors(run, document_id)))


@router.post(
    "/documents/{document_id}/chunks-to-embed",
    response_model=wire.ChunksAnswer,
    summary="A document's chunks still lacking a vector in a space",
)
async def chunks_to_embed(document_id: IdPath, body: wire.SpaceRequest, store: StoreDep) -> Response:
    title, chunks = await store.chunks_to_embed(document_id, await store.space(body.space_id))
    return _answer(wire.ChunksAnswer(title=title, chunks=[wire.ChunkText(id=i, content=c) for i, c in chunks]))


@router.post("/chunk-vectors", summary="Give chunks their vector in a space")
async def chunk_vectors(body: wire.ChunkVectorsRequest, store: StoreDep) -> Response:
    try:
        vecs = wire.decode_vectors(body.vectors, len(body.chunk_ids))
    except ValueError as exc:
        raise ProblemError(422, f"body.vectors: {exc}") from exc
    space = await store.space(body.space_id)
    if any(len(v) != space.dimensions for v in vecs):
        raise ProblemError(422, f"body.vectors: vectors of space {space.id} have {space.dimensions} dimensions")
    await store.store_chunk_vectors(space, body.chunk_ids, vecs)
    return _EMPTY


@router.post(
    "/runs/{run}/documents/{document_id}/reembedded",
    response_model=wire.OutcomeAnswer,
    summary="Record a document as re-embedded",
)
async def reembedded(run: RunPath, document_id: IdPath, body: wire.SpaceRequest, store: StoreDep) -> Response:
    outcome = await store.finish_reembed(run, document_id, await store.space(body.space_id))
    return _answer(wire.OutcomeAnswer(outcome=outcome))
