"""Live progress of a job as Server-Sent Events.

The stream replays the job's event log (RunStarted, Discovered, RunSucceeded, ...) with each
entry's id as the SSE id, so a client reconnecting with `Last-Event-ID` gets only what it missed.
Between entries it sends `progress` snapshots when the counts change and `phase` when the phase
does; snapshots carry no id, since the next one supersedes them. It ends after the job reaches a
terminal phase (Succeeded or Failed) or is suspended, and everything up to that point was sent.
Every `events_recheck_seconds` it checks again that the caller's token is valid and may still read
the namespace, and ends when not.

When the API is asked to stop (SIGTERM, a rollout), every open stream ends cleanly, without an
`end` event, so the client's EventSource reconnects to another replica with `Last-Event-ID`. The
generator ends itself: sse-starlette sets the stream's shutdown event, and it returns at its next
wait. Were it cancelled instead, the stream would end in a truncated chunk whenever the cancellation
caught a send.
"""

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from headrace.api.deps import BearerDep, JobNamePath, NamespaceDep, PoolDep, PrincipalDep, ServicesDep
from headrace.api.problems import ProblemError, responses
from headrace.api.routes.jobs import job_or_404
from headrace.api.settings import ApiSettings
from headrace.model import TERMINAL_PHASES
from headrace.redaction import redact
from headrace.store import jobs as store
from headrace.store.db import Pool

# A suspended job makes no progress: its streams end rather than hold a slot open for days.
ENDING_PHASES = (*TERMINAL_PHASES, "Suspended")

router = APIRouter(prefix="/v1/namespaces/{ns}/ingestionjobs", tags=["jobs"])

_STREAM_DOC = """\
`text/event-stream` with these events:

- `job` (with `id`): an entry of the job's event log: `{"id", "run", "type", "reason", "message", "time"}`;
- `phase`: `{"phase", "run"}` whenever the phase changes (and once at the start);
- `progress`: `{"run", "total", "succeeded", "failed", "pending", "percent"}` whenever the counts change;
- `end`: `{"phase"}` just before the server closes a stream whose job reached Succeeded or Failed or was
  suspended (`Suspended`), or was deleted (`Deleted`); `{"phase": null, "reason": "AccessEnded"}` when the
  caller's token or permission lapsed while the stream was open.

Send `Last-Event-ID` (the last `id` seen) to resume without replaying older log entries.
"""


Recheck = Callable[[], Awaitable[bool]]


async def _stream(
    pool: Pool,
    uid: Any,
    after: int,
    request: Request,
    release: Callable[[], None],
    recheck: Recheck,
    settings: ApiSettings,
    stopping: anyio.Event,
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for event in _follow(pool, uid, after, request, recheck, settings, stopping):
            yield event
    finally:
        release()


async def _follow(
    pool: Pool,
    uid: Any,
    after: int,
    request: Request,
    recheck: Recheck,
    settings: ApiSettings,
    stopping: anyio.Event,
) -> AsyncIterator[ServerSentEvent]:
    last_phase: tuple[str, int] | None = None
    last_progress: dict[str, Any] | None = None
    loop = asyncio.get_running_loop()
    checked_at = loop.time()
    while True:
        if loop.time() - checked_at >= settings.events_recheck_seconds:
            if not await recheck():
                yield ServerSentEvent(json.dumps({"phase": None, "reason": "AccessEnded"}), event="end")
                return
            checked_at = loop.time()
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
                    "message": redact(entry["message"]),
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
        if snapshot[0] in ENDING_PHASES:
            yield ServerSentEvent(json.dumps({"phase": snapshot[0]}), event="end")
            return
        if await request.is_disconnected():
            return
        with anyio.move_on_after(settings.events_poll_seconds):
            await stopping.wait()
        if stopping.is_set():  # the server is stopping: end cleanly, and the client reconnects elsewhere
            return


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
    principal: PrincipalDep,
    credentials: BearerDep,
    last_event_id: Annotated[
        str | None, Header(max_length=18, description="The last event id received, to resume after it.")
    ] = None,
) -> EventSourceResponse:
    after = 0
    if last_event_id:
        # isdigit() alone takes "²" (a Latin-1 b'\xb2' header) and other digits int() refuses.
        if not (last_event_id.isascii() and last_event_id.isdigit()):
            raise ProblemError(400, "Last-Event-ID must be an event id this stream sent")
        after = int(last_event_id)
    view = await job_or_404(pool, ns, name)
    settings = services.settings
    token = credentials.credentials if credentials else None

    async def recheck() -> bool:
        """Whether the caller's token still names them and they may still read the namespace."""
        try:
            again = await services.auth.authenticate(token)
            return again == principal and await services.auth.may_read(principal, ns)
        except ProblemError:  # rejected, or the API server could not say: the client reconnects
            return False

    release = services.streams.reserve(principal.name)
    try:
        stopping = anyio.Event()
        stream = _stream(pool, view.uid, after, request, release, recheck, settings, stopping)
        # A stream the server never starts iterating (the client left first) still frees its slot.
        weakref.finalize(stream, release)
        return EventSourceResponse(
            stream,
            ping=int(settings.events_ping_seconds) or 1,
            shutdown_event=stopping,
            # Time for the generator to notice and return, within uvicorn's own grace for open requests.
            shutdown_grace_period=settings.shutdown_grace_seconds / 2,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    except BaseException:
        release()
        raise
