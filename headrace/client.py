"""A typed Python client of the Headrace API (docs/api.md), async (`AsyncClient`) and sync (`Client`).

For the apps that search: RAG services, dashboards, scripts. Pages are followed for you (`iter_*`), and
`events` resumes a dropped stream with `Last-Event-ID`, as a browser's EventSource does. In a pod the
client authenticates with the pod's ServiceAccount token, read from its standard path on every request
(projected tokens are rotated); outside one, pass `token=` or `token_file=`.

    async with AsyncClient("http://headrace-api.headrace") as api:
        page = await api.search("how do I roll back a release", namespaces=["docs-team"], limit=5)
        for hit in page.items:
            print(hit.job, hit.uri, hit.score, hit.text)

The answers are the API's own models (`headrace.api.schemas`): one definition for server and client.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from headrace.api.schemas import (
    DocumentPassages,
    JobDetail,
    JobList,
    JobStatus,
    Passage,
    PassageContext,
    SearchHit,
    SearchResults,
)
from headrace.keepalive import CONNECTIONS

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
"""Where the kubelet mounts a pod's ServiceAccount token."""

T = TypeVar("T")


class ApiError(Exception):
    """The API answered with a problem (RFC 9457): `status`, and `detail` saying why."""

    def __init__(self, status: int, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.problem = problem


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of a job's stream: `job`, `phase`, `progress` or `end`, with its data."""

    event: str
    data: dict[str, Any]
    id: str | None = None


class _BearerFile(httpx.Auth):
    """A bearer token read from a file on every request: a projected ServiceAccount token is rotated."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.path.read_text().strip()}"
        yield request


def _auth(token: str | None, token_file: Path | None) -> httpx.Auth | None:
    if token is not None:
        return _StaticBearer(token)
    path = token_file or (SERVICE_ACCOUNT_TOKEN if SERVICE_ACCOUNT_TOKEN.exists() else None)
    return _BearerFile(path) if path is not None else None


class _StaticBearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = problem.get("detail") if isinstance(problem, dict) else None
    raise ApiError(response.status_code, str(detail or response.reason_phrase), problem if detail else {})


class AsyncClient:
    """The Headrace API over `httpx.AsyncClient`. Use as `async with`, or call `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=_auth(token, token_file),
            timeout=timeout,
            transport=transport,
            limits=CONNECTIONS,
        )

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, **params: Any) -> Any:
        response = await self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        _raise_for_problem(response)
        return response.json()

    async def jobs(self, namespace: str, *, limit: int = 50, cursor: str | None = None) -> JobList:
        """One page of the namespace's IngestionJobs with their progress."""
        return JobList.model_validate(
            await self._get(f"/v1/namespaces/{namespace}/ingestionjobs", limit=limit, cursor=cursor)
        )

    async def iter_jobs(self, namespace: str, *, page_size: int = 50) -> AsyncIterator[JobStatus]:
        """Every IngestionJob of the namespace, page after page."""
        cursor = None
        while True:
            page = await self.jobs(namespace, limit=page_size, cursor=cursor)
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def job(self, namespace: str, name: str) -> JobDetail:
        """A job's status, progress and recent runs."""
        return JobDetail.model_validate(await self._get(f"/v1/namespaces/{namespace}/ingestionjobs/{name}"))

    async def search(
        self,
        q: str,
        *,
        namespaces: list[str] | None = None,
        job: str | None = None,
        uri_prefix: str | None = None,
        metadata: dict[str, Any] | None = None,
        mode: str | None = None,
        vector: list[float] | None = None,
        limit: int = 10,
        cursor: str | None = None,
        highlight: str = "none",
        rerank: bool | None = None,
    ) -> SearchResults:
        """One page of hits (POST /v1/search). Snippets are plain text unless `highlight="html"`.
        `rerank=True` has the platform's reranker re-score the first hits (one page, no next cursor)."""
        body = {
            "q": q,
            "namespaces": namespaces,
            "job": job,
            "uriPrefix": uri_prefix,
            "metadata": metadata,
            "mode": mode,
            "vector": vector,
            "limit": limit,
            "cursor": cursor,
            "highlight": highlight,
            "rerank": rerank,
        }
        response = await self._http.post("/v1/search", json={k: v for k, v in body.items() if v is not None})
        _raise_for_problem(response)
        return SearchResults.model_validate(response.json())

    async def iter_search(
        self, q: str, *, max_hits: int, page_size: int = 20, **filters: Any
    ) -> AsyncIterator[SearchHit]:
        """Up to `max_hits` hits, best first, page after page (the same filters as `search`)."""
        cursor, seen = None, 0
        while seen < max_hits:
            page = await self.search(q, limit=min(page_size, max_hits - seen), cursor=cursor, **filters)
            for hit in page.items:
                yield hit
            seen += len(page.items)
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def neighbours(self, namespace: str, job: str, chunk_id: int, *, context: int = 1) -> PassageContext:
        """A hit's chunk with up to `context` chunks either side in its document: the context for a prompt."""
        path = f"/v1/namespaces/{namespace}/ingestionjobs/{job}/chunks/{chunk_id}"
        return PassageContext.model_validate(await self._get(path, context=context))

    async def iter_passages(self, namespace: str, job: str, uri: str, *, page_size: int = 50) -> AsyncIterator[Passage]:
        """Every chunk of a document, in order."""
        cursor = None
        while True:
            page = DocumentPassages.model_validate(
                await self._get(
                    f"/v1/namespaces/{namespace}/ingestionjobs/{job}/passages", uri=uri, limit=page_size, cursor=cursor
                )
            )
            for passage in page.passages:
                yield passage
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def events(
        self, namespace: str, name: str, *, last_event_id: str | None = None, reconnect_seconds: float = 1.0
    ) -> AsyncIterator[Event]:
        """The job's live events until the stream's `end` (which is yielded too). A stream that drops without
        `end` (an API pod rolled) is resumed with `Last-Event-ID`, so no `job` event is repeated or lost."""
        path = f"/v1/namespaces/{namespace}/ingestionjobs/{name}/events"
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with self._http.stream("GET", path, headers=headers, timeout=None) as response:
                    if not response.is_success:
                        await response.aread()
                        _raise_for_problem(response)
                    async for event in _parse_sse(response.aiter_lines()):
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "end":
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass  # dropped: resume below
            await asyncio.sleep(reconnect_seconds)


async def _parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Server-Sent Events from a response's lines (the WHATWG format: fields, a blank line ends an event)."""
    name, event_id = "message", None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)), event_id)
            name, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive ping
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


class Client:
    """The same API, for code without an event loop: each call runs `AsyncClient`'s on a private loop."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._async = self._runner.run(_make(base_url, options))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._async.aclose())
        self._runner.close()

    def jobs(self, namespace: str, **options: Any) -> JobList:
        return self._runner.run(self._async.jobs(namespace, **options))

    def iter_jobs(self, namespace: str, **options: Any) -> Iterator[JobStatus]:
        return self._iterate(self._async.iter_jobs(namespace, **options))

    def job(self, namespace: str, name: str) -> JobDetail:
        return self._runner.run(self._async.job(namespace, name))

    def search(self, q: str, **options: Any) -> SearchResults:
        return self._runner.run(self._async.search(q, **options))

    def iter_search(self, q: str, *, max_hits: int, **options: Any) -> Iterator[SearchHit]:
        return self._iterate(self._async.iter_search(q, max_hits=max_hits, **options))

    def neighbours(self, namespace: str, job: str, chunk_id: int, *, context: int = 1) -> PassageContext:
        return self._runner.run(self._async.neighbours(namespace, job, chunk_id, context=context))

    def iter_passages(self, namespace: str, job: str, uri: str, **options: Any) -> Iterator[Passage]:
        return self._iterate(self._async.iter_passages(namespace, job, uri, **options))

    def events(self, namespace: str, name: str, **options: Any) -> Iterator[Event]:
        return self._iterate(self._async.events(namespace, name, **options))

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self._runner.run(anext(items))  # type: ignore[arg-type]
            except StopAsyncIteration:
                return


async def _make(base_url: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, **options)  # made on the runner's loop, which its connections belong to
