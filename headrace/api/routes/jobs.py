"""Jobs: status and progress of IngestionJobs, and their documents, from Postgres."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from headrace.api.deps import JobNamePath, NamespaceDep, PoolDep
from headrace.api.problems import ProblemError, responses
from headrace.api.schemas import Cursor, DocumentInfo, DocumentList, JobDetail, JobList, JobStatus, RunInfo
from headrace.model import Progress, RunSummary
from headrace.redaction import redact_optional
from headrace.store import cursors, documents
from headrace.store import jobs as store
from headrace.store.db import Pool

router = APIRouter(
    prefix="/v1/namespaces/{ns}/ingestionjobs", tags=["jobs"], responses=responses(400, 401, 403, 422, 429, 503)
)

# Each job costs a progress query: lists of jobs are shorter than lists of documents.
JobPageLimit = Annotated[int, Query(ge=1, le=100, description="Jobs per page.")]
PageLimit = Annotated[int, Query(ge=1, le=500, description="Documents per page.")]
PageCursor = Annotated[Cursor | None, Query(description="`nextCursor` of the previous page.")]


def _status(view: store.JobView) -> JobStatus:
    """The job as the API shows it. Phase, end time and reason are read off the current run's row, as in
    the operator's status: both derive the phase with `model.run.phase_of`."""
    state = view.state
    return JobStatus(
        **{
            "namespace": view.namespace,
            "name": view.name,
            "uid": str(view.uid),
            "phase": view.phase,
            "reason": "InvalidSpec" if view.spec_error else (state.end_reason if state else None),
            "run": view.current_run,
            "progress": state.progress if state else Progress(),
            "summary": state.summary if state else RunSummary(),
            "discovery_done": state.discovery_done if state else False,
            "start_time": state.started_at if state else None,
            "completion_time": state.finished_at if state else None,
            "error": redact_optional(view.spec_error or (state.error if state else None)),
            "created_at": view.created_at,
            "updated_at": view.updated_at,
        }
    )


async def job_or_404(pool: Pool, namespace: str, name: str) -> store.JobView:
    view = await store.find_job(pool, namespace, name)
    if view is None:
        raise ProblemError(404, f"ingestionjob {namespace}/{name} not found")
    return view


@router.get("", summary="List the namespace's IngestionJobs with their progress")
async def list_jobs(ns: NamespaceDep, pool: PoolDep, limit: JobPageLimit = 50, cursor: PageCursor = None) -> JobList:
    after = cursors.decode(cursor, str) if cursor else None
    views = await store.list_jobs(pool, ns, after_name=after, limit=limit + 1)
    items = [_status(v) for v in views[:limit]]
    return JobList(items=items, next_cursor=cursors.encode(items[-1].name) if len(views) > limit else None)


@router.get("/{name}", summary="An IngestionJob's status, progress and recent runs", responses=responses(404))
async def get_job(ns: NamespaceDep, name: JobNamePath, pool: PoolDep) -> JobDetail:
    view = await job_or_404(pool, ns, name)
    runs = await store.list_runs(pool, view.uid)
    return JobDetail(
        **_status(view).model_dump(),
        runs=[
            RunInfo(
                run=r.run,
                reason=r.reason,
                start_time=r.started_at,
                completion_time=r.finished_at,
                end_reason=r.end_reason,
                error=redact_optional(r.error),
            )
            for r in runs
        ],
    )


@router.get(
    "/{name}/documents", summary="An IngestionJob's documents, failed ones with their reason", responses=responses(404)
)
async def list_documents(
    ns: NamespaceDep,
    name: JobNamePath,
    pool: PoolDep,
    state: Annotated[Literal["ingested", "failed"] | None, Query(description="Only documents in this state.")] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> DocumentList:
    view = await job_or_404(pool, ns, name)
    after = cursors.decode(cursor, int) if cursor else 0
    rows = await documents.list_documents(pool, view.uid, state=state, after_id=after, limit=limit + 1)
    items = [
        DocumentInfo(
            uri=r.uri,
            title=r.title,
            state=r.state,
            error=redact_optional(r.error),
            format=r.format,
            bytes=r.bytes,
            chunks=r.chunk_count,
            run=r.run,
            outcome=r.outcome,
            updated_at=r.updated_at,
        )
        for r in rows[:limit]
    ]
    return DocumentList(items=items, next_cursor=cursors.encode(rows[limit - 1].id) if len(rows) > limit else None)
