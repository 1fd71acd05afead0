"""`RemoteStore`: the worker's store in a pod, through the ingest service (the worker API, `/v1/jobs/...`).

The pod holds no database credential, only its projected ServiceAccount token (audience
`headrace-ingest`), which the kubelet rotates: the file is read again for every request.

Requests go straight to the HTTP transport's connection pool, not through `httpx.AsyncClient`: the
client's own layers (URL merging, cookies, auth and redirect hooks) were about a third of the worker's
CPU per request on a no-op lease (docs/benchmarks.md, "Worker API"), and this client uses none of them.

Outages are ridden out as `DirectStore` rides out a Postgres restart (`store.outage`, same budget and
backoff): the service unreachable, a connection broken mid-answer, or an answer of 502, 503 or 504
(the service restarting, or its database failing over) is retried, and 429 after its Retry-After.
Every call is idempotent for its run, so repeating one whose answer was lost changes nothing. Any
other 4xx is not retried: it is a clear error naming the route and the service's reason (404
`ForeignId`, 409 `RunSuperseded`, else `IngestRefused`), and so is a 5xx other than those.
"""

import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
from tenacity import RetryCallState

from headrace.model import IngestionJobSpec
from headrace.model.contract import INGEST_TOKEN_PATH
from headrace.store import outage, queue, vectors
from headrace.store.documents import DocumentRecord, KnownDocument, Outcome, Written
from headrace.store.jobs import JobRecord
from headrace.store.outage import BACKOFF, MAX_BACKOFF_SECONDS, retrying
from headrace.worker import wire
from headrace.worker.store import FailOutcome, ForeignId, RunSuperseded, Vectors

log = logging.getLogger(__name__)

A = TypeVar("A", bound=wire.Answer)

DEFAULT_TOKEN_FILE = Path(INGEST_TOKEN_PATH)
MAX_TOKEN_BYTES = 64 * 1024
"""More than any ServiceAccount token (a JWT of a few kilobytes); a longer file is cut, and refused."""


class IngestRefused(Exception):
    """The ingest service refused a request (a 4xx other than 404 and 409, or a 5xx it will not outlive)."""

    def __init__(self, status: int, route: str, detail: str) -> None:
        super().__init__(f"the ingest service answered {status} to {route}: {detail}")
        self.status = status
        self.detail = detail


class IngestUnreachable(Exception):
    """The service stayed unreachable, or unable to answer, for the whole outage budget."""

    def __init__(self, base_url: str, seconds: float, last: BaseException) -> None:
        reason = str(last) if isinstance(last, Unavailable) else f"{type(last).__name__}: {last}".rstrip(": ")
        super().__init__(
            f"cannot reach the ingest service at {base_url} for {seconds:g} s: {reason} "
            "(is it running? check HEADRACE_INGEST_URL)"
        )


class Unavailable(Exception):
    """The service answered that it cannot serve now (502, 503, 504, 429): retried under the policy."""

    def __init__(self, status: int, route: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"the ingest service answered {status} to {route}: {detail}")
        self.status = status
        self.retry_after = retry_after


def is_outage(error: BaseException) -> bool:
    """Whether the error says the service cannot be reached or cannot answer now, so a retry may do."""
    return isinstance(error, (httpx.TransportError, Unavailable))


def _wait(state: RetryCallState) -> float:
    """The outage policy's backoff, or the service's Retry-After when it said one (at most the policy's cap)."""
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, Unavailable) and error.retry_after is not None:
        return min(max(error.retry_after, 0.1), MAX_BACKOFF_SECONDS)
    return float(BACKOFF(state))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    return str(body.get("detail") or body.get("title") or body) if isinstance(body, dict) else str(body)[:500]


class RemoteStore:
    """`WorkerStore` over HTTP, for the one job the pod's token belongs to."""

    def __init__(
        self,
        base_url: str,
        job_uid: uuid.UUID,
        *,
        token_file: Path = DEFAULT_TOKEN_FILE,
        give_up_after: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_request_bytes: int = wire.MAX_REQUEST_BYTES,
    ) -> None:
        self._job_uid = job_uid
        self._token_file = token_file
        self._give_up_after = give_up_after
        self._base_url = base_url.rstrip("/")
        self._max_request_bytes = max_request_bytes
        self._prefix = f"/{wire.API_VERSION}/jobs/{job_uid}"
        self._transport = transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8)
        )
        # A store of a large group takes a while; the service's statements time out at 60 s.
        self._timeout = httpx.Timeout(10.0, read=120.0, write=60.0).as_dict()

    @property
    def job_uid(self) -> uuid.UUID:
        return self._job_uid

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _token(self) -> str:
        """The token in the file now (three system calls: pathlib's text read cost ~5% of a lease)."""
        try:
            fd = os.open(self._token_file, os.O_RDONLY)
            try:
                return os.read(fd, MAX_TOKEN_BYTES + 1).decode("ascii").strip()
            finally:
                os.close(fd)
        except (OSError, UnicodeDecodeError) as exc:
            raise IngestRefused(
                401, "(no request)", f"cannot read the worker's token {self._token_file}: {exc}"
            ) from exc

    async def _call(self, method: str, path: str, body: wire.Body | bytes | None, answer: type[A]) -> A:
        """One request, retried under the outage policy; the answer parsed as `answer`."""
        content = body if isinstance(body, bytes | None) else body.model_dump_json(by_alias=True).encode()
        try:  # the first try outside the policy: making one costs more than a no-op lease's own work
            response = await self._once(method, path, content)
        except (httpx.TransportError, Unavailable) as exc:
            response = await self._ride_out(exc, method, path, content)
        return answer.model_validate_json(response.content)

    async def _ride_out(self, first: BaseException, method: str, path: str, content: bytes | None) -> httpx.Response:
        """The request again under the outage policy, which takes `first` as its first attempt's error (so it
        logs and waits as for any other)."""
        budget = outage.OUTAGE_SECONDS if self._give_up_after is None else self._give_up_after
        policy = retrying(give_up_after=budget, is_outage=is_outage, wait=_wait, message="Lost ingest service")
        failed = [first]

        async def attempt() -> httpx.Response:
            if failed:
                raise failed.pop()
            return await self._once(method, path, content)

        try:
            response: httpx.Response = await policy(attempt)
        except (httpx.TransportError, Unavailable) as exc:  # the budget is spent: `is_outage` retries only these
            raise IngestUnreachable(self._base_url, budget, exc) from exc
        return response

    async def _once(self, method: str, path: str, content: bytes | None) -> httpx.Response:
        route = f"{method} {self._prefix}{path}"
        request = httpx.Request(
            method,
            self._base_url + self._prefix + path,
            headers=[
                ("User-Agent", "headrace-worker"),
                ("Content-Type", "application/json"),
                ("Authorization", f"Bearer {self._token()}"),
            ],
            content=content,
            extensions={"timeout": self._timeout},
        )
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        status = response.status_code
        if status < 300:
            return response
        detail = _detail(response)
        if status in (429, 502, 503, 504):
            raise Unavailable(status, route, detail, _retry_after(response))
        if status == 404:
            raise ForeignId(f"the ingest service answered 404 to {route}: {detail}")
        if status == 409:
            raise RunSuperseded(detail)
        raise IngestRefused(status, route, detail)

    # --- the job -----------------------------------------------------------------------------------------

    async def get_job(self) -> JobRecord | None:
        try:
            body = await self._call("GET", "", None, wire.JobBody)
        except ForeignId:
            return None  # deleted: its IngestionJob's finalizer removed it
        fields = body.model_dump(exclude={"spec"})
        return JobRecord(**fields, spec=IngestionJobSpec.model_validate(body.spec))

    async def vector_space(self) -> vectors.Space | None:
        answer = await self._call("GET", "/vector-space", None, wire.SpaceAnswer)
        return answer.space

    # --- the queue ---------------------------------------------------------------------------------------

    async def lease(
        self, done: Sequence[queue.Task], *, worker: str, lease_seconds: float, limit: int
    ) -> tuple[set[int], list[queue.Task]]:
        request = wire.LeaseRequest(
            acks=[wire.HeldTask.of(t) for t in done], worker=worker, lease_seconds=lease_seconds, limit=limit
        )
        answer = await self._call("POST", "/leases", request, wire.LeaseAnswer)
        return set(answer.acked), answer.leased

    async def ack(self, tasks: Sequence[queue.Task]) -> set[int]:
        if not tasks:
            return set()
        request = wire.AckRequest(tasks=[wire.HeldTask.of(t) for t in tasks])
        return set((await self._call("POST", "/acks", request, wire.AckAnswer)).acked)

    async def heartbeat(self, tasks: Sequence[queue.Task], *, lease_seconds: float) -> set[int]:
        if not tasks:
            return set()
        request = wire.HeartbeatRequest(tasks=[wire.HeldTask.of(t) for t in tasks], lease_seconds=lease_seconds)
        return set((await self._call("POST", "/heartbeats", request, wire.HeartbeatAnswer)).kept)

    async def fail(self, task: queue.Task, error: str, *, backoff: float, permanent: bool) -> FailOutcome:
        request = wire.FailRequest(
            lease_token=task.lease_token,
            error=error[: wire.MAX_REASON_CHARS],
            backoff_seconds=backoff,
            permanent=permanent,
        )
        return (await self._call("POST", f"/tasks/{task.id}/failure", request, wire.FailAnswer)).outcome

    async def release(self, task: queue.Task) -> bool:
        request = wire.ReleaseRequest(lease_token=task.lease_token)
        return (await self._call("POST", f"/tasks/{task.id}/release", request, wire.ReleaseAnswer)).released

    async def reap_expired(self) -> list[queue.Task]:
        answer = await self._call("POST", "/expired-leases", None, wire.TasksAnswer)
        return answer.tasks

    async def is_drained(self) -> bool:
        return (await self._call("GET", "/drained", None, wire.DrainedAnswer)).drained

    async def finish_run(self, run: int) -> bool:
        return (await self._call("POST", f"/runs/{run}/finish", None, wire.FinishedAnswer)).finished

    async def enqueue_discovered(
        self, run: int, batches: Sequence[queue.NewTask], *, max_attempts: int, total: int, done: bool
    ) -> None:
        request = wire.DiscoveredRequest(
            tasks=[wire.NewTaskBody(kind="ingest", dedupe_key=t.dedupe_key, payload=t.payload) for t in batches],
            max_attempts=max_attempts,
            total=total,
            done=done,
        )
        await self._call("POST", f"/runs/{run}/discovered", request, wire.Answer)

    # --- documents ---------------------------------------------------------------------------------------

    async def known(self, uris: Sequence[str]) -> dict[str, KnownDocument]:
        if not uris:
            return {}
        answer = await self._call("POST", "/documents/known", wire.UrisRequest(uris=list(uris)), wire.KnownAnswer)
        return {d.uri: d for d in answer.documents}

    async def processed_in_run(self, run: int, uris: Sequence[str]) -> set[str]:
        if not uris:
            return set()
        request = wire.UrisRequest(uris=list(uris))
        return set((await self._call("POST", f"/runs/{run}/processed", request, wire.UrisAnswer)).uris)

    async def entry_hashes(self, archive_uri: str, fingerprint: str) -> dict[str, str]:
        request = wire.EntryHashesRequest(uri=archive_uri, fingerprint=fingerprint)
        return (await self._call("POST", "/documents/entry-hashes", request, wire.EntryHashesAnswer)).hashes

    async def store_documents(
        self, run: int, docs: Sequence[tuple[DocumentRecord, Vectors]], *, space: vectors.Space | None
    ) -> Written:
        """The group in as few requests as fit `max_request_bytes` (each its own transaction; a group is
        a batching of documents, each written whole). A document too large for any request is refused."""
        written = Written()
        head = b'{"spaceId":' + json.dumps(space.id if space is not None else None).encode() + b',"documents":['
        parts = [
            (doc.uri, wire.DocumentBody.of(doc, vecs).model_dump_json(by_alias=True).encode()) for doc, vecs in docs
        ]
        while parts:
            size, take = len(head) + 2, 0
            while take < len(parts) and (take == 0 or size + len(parts[take][1]) + 1 <= self._max_request_bytes):
                size += len(parts[take][1]) + 1
                take += 1
            batch, parts = parts[:take], parts[take:]
            body = head + b",".join(part for _, part in batch) + b"]}"
            try:
                answer = await self._call("POST", f"/runs/{run}/documents", body, wire.StoreAnswer)
            except IngestRefused as exc:
                if exc.status != 413 or len(batch) > 1:
                    raise
                written.refused[batch[0][0]] = (
                    f"the document's chunks are too large for the ingest service: {exc.detail}"
                )
                continue
            written.outcomes.update(answer.outcomes)
            written.refused.update(answer.refused)
        return written

    async def record_outcomes(
        self,
        run: int,
        *,
        unchanged: Sequence[str] = (),
        unchanged_archives: Sequence[str] = (),
        versions: Mapping[str, str] | None = None,
        failures: Mapping[str, str] | None = None,
    ) -> None:
        if not (unchanged or unchanged_archives or versions or failures):
            return
        request = wire.OutcomesRequest(
            unchanged=list(unchanged),
            unchanged_archives=list(unchanged_archives),
            versions=dict(versions or {}),
            failures={uri: reason[: wire.MAX_REASON_CHARS] for uri, reason in (failures or {}).items()},
        )
        await self._call("POST", f"/runs/{run}/outcomes", request, wire.Answer)

    # --- re-embedding kept documents -----------------------------------------------------------------------

    async def stale_embeddings(
        self, space: vectors.Space | None, uris: Sequence[str], archive_uris: Sequence[str]
    ) -> list[tuple[int, str]]:
        request = wire.StaleRequest(
            space_id=space.id if space is not None else None, uris=list(uris), archives=list(archive_uris)
        )
        answer = await self._call("POST", "/documents/stale-embeddings", request, wire.StaleAnswer)
        return [(d.id, d.uri) for d in answer.documents]

    async def drop_vectors(self, run: int, document_id: int) -> Outcome | None:
        path = f"/runs/{run}/documents/{document_id}/drop-vectors"
        return (await self._call("POST", path, None, wire.OutcomeAnswer)).outcome

    async def chunks_to_embed(self, document_id: int, space: vectors.Space) -> tuple[str, list[tuple[int, str]]]:
        request = wire.SpaceRequest(space_id=space.id)
        answer = await self._call("POST", f"/documents/{document_id}/chunks-to-embed", request, wire.ChunksAnswer)
        return answer.title, [(c.id, c.content) for c in answer.chunks]

    async def store_chunk_vectors(self, space: vectors.Space, chunk_ids: Sequence[int], vecs: Vectors) -> None:
        if not chunk_ids:
            return
        if len(chunk_ids) != len(vecs):
            raise ValueError(f"{len(vecs)} vectors for {len(chunk_ids)} chunks")
        encoded = wire.encode_vectors(vecs)
        assert encoded is not None
        request = wire.ChunkVectorsRequest(space_id=space.id, chunk_ids=list(chunk_ids), vectors=encoded)
        await self._call("POST", "/chunk-vectors", request, wire.Answer)

    async def finish_reembed(self, run: int, document_id: int, space: vectors.Space) -> Outcome | None:
        request = wire.SpaceRequest(space_id=space.id)
        path = f"/runs/{run}/documents/{document_id}/reembedded"
        return (await self._call("POST", path, request, wire.OutcomeAnswer)).outcome
