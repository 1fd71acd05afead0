"""Live progress of a job as Server-Sent Events.

The stream replays the job's event log (RunStarted, Discovered, RunSucceeded, ...) with each
entry's id as the SSE id, so a client reconnecting with `Last-Event-ID` gets only what it missed.
Between entries it sends `progress` snapshots when the counts change and `phase` when the phase
does; snapshots carry no id, since the next one supersedes them. It ends after the job reaches a
terminal phase (Succeeded or Failed) and everything up to that point was sent.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from headrace.api.deps import JobNamePath, NamespaceDep, PoolDep, ServicesDep, StreamCount
from headrace.api.problems import ProblemError, responses
from headrace.api.routes.jobs import job_or_404
from headrace.model import TERMINAL_PHASES
from headrace.store import jobs as store
from headrace.store.db import Pool

router = APIRouter(prefix="/v1/namespaces/{ns}/ingestionjobs", tags=["jobs"])

_STREAM_DOC = """\
`text/event-stream` with these events:

- `job` (with `id`): an entry of the job's event log: `{"id", "run", "type", "reason", "message", "time"}`;
- `phase`: `{"phase", "run"}` whenever the phase changes (and once at the start);
- `progress`: `{"run", "total", "succeeded", "failed", "pending", "percent"}` whenever the counts change;
- `end`: `{"phase"}` just before the server closes a stream whose job reached Succeeded or Failed.

Send `Last-Event-ID` (the last `id` seen) to resume without replaying older log entries.
"""


async def _stream(
    pool: Pool, uid: Any, after: int, poll_seconds: float, request: Request, streams: StreamCount
) -> AsyncIterator[ServerSentEvent]:
    streams.open += 1
    try:
        async for event in _follow(pool, uid, after, poll_seconds, request):
            yield event
    finally:
        streams.open -= 1


async def _follow(
    pool: Pool, uid: Any, after: int, poll_seconds: float, request: Request
) -> AsyncIterator[ServerSentEvent]:
    last_phase: tuple[str, int] | None = None
    last_progress: dict[str, Any] | None = None
    while True:
        snapshot = await store.job_phase(pool, uid)
        if snapshot is None:  # the job was deleted while we watched
            yield ServerSentEvent(json.dumps({"phase": "Deleted"}), event="end")
            return
        # Read the log after the phase, so a terminal phase is never reported before its last entries.
        while entries := await store.events(pool, uid, after=after, limit=200):
            for entry in entries:
                after = entry["id"]
                data = {
                    "id": entry["id"],
                    "run": entry["run"],
                    "type": entry["type"],
                    "reason": entry["reason"],
                    "message": entry["message"],
                    "time": entry["created_at"].isoformat(),
                }
                yield ServerSentEvent(json.dumps(data), event="job", id=str(entry["id"]))
        if snapshot != last_phase:
            last_phase = snapshot
            yield ServerSentEvent(json.dumps({"phase": snapshot[0], "run": snapshot[1]}), event="phase")
        state = await store.run_state(pool, uid) if snapshot[1] else None
        if state is not None:
            progress = {"run": state.run, **state.progress.model_dump()}
            if progress != last_progress:
                last_progress = progress
                yield ServerSentEvent(json.dumps(progress), event="progress")
        if snapshot[0] in TERMINAL_PHASES:
            yield ServerSentEvent(json.dumps({"phase": snapshot[0]}), event="end")
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll_seconds)


@router.get(
    "/{name}/events",
    summary="Stream an IngestionJob's progress and phase changes (Server-Sent Events)",
    description=_STREAM_DOC,
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "An event stream"},
        **responses(400, 401, 403, 404, 422, 429, 503),
    },
)
async def stream_events(
    request: Request,
    ns: NamespaceDep,
    name: JobNamePath,
    pool: PoolDep,
    services: ServicesDep,
    last_event_id: Annotated[
        str | None, Header(max_length=18, description="The last event id received, to resume after it.")
    ] = None,
) -> EventSourceResponse:
    after = 0
    if last_event_id:
        if not last_event_id.isdigit():
            raise ProblemError(400, "Last-Event-ID must be an event id this stream sent")
        after = int(last_event_id)
    view = await job_or_404(pool, ns, name)
    settings = services.settings
    if services.streams.open >= settings.events_max_streams:
        raise ProblemError(
            503, "this API process has as many event streams open as it may", headers={"Retry-After": "10"}
        )
    return EventSourceResponse(
        _stream(pool, view.uid, after, settings.events_poll_seconds, request, services.streams),
        ping=int(settings.events_ping_seconds) or 1,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
