"""Bounds on what one caller can ask for: request body and query sizes, how long a body may take, and a
per-principal rate."""

import asyncio
import math
import time
from collections import OrderedDict

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headrace.api.problems import ProblemError, problem_response


class RateLimited(ProblemError):
    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(429, f"too many requests; retry in {seconds}s", headers={"Retry-After": str(seconds)})


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int, *, keys: int = 10_000) -> None:
        self.rate, self.burst, self.keys = rate, burst, keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str) -> None:
        """Take one token for `key`, or raise RateLimited saying when one will be there."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1 - tokens) / self.rate)
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.keys:
            self._buckets.popitem(last=False)


class SizeLimits:
    """ASGI middleware: 414 for a query string over `max_query`, 413 for a body over `max_body` bytes.

    The body is counted as it arrives, so a chunked upload without Content-Length is cut off too.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, max_query: int) -> None:
        self.app, self.max_body, self.max_query = app, max_body, max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if len(scope.get("query_string", b"")) > self.max_query:
            detail = f"the query string is longer than {self.max_query} characters"
            await problem_response(414, detail, instance=path)(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await problem_response(413, f"the request body is over {self.max_body} bytes", instance=path)(
                scope, receive, send
            )
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # FastAPI re-raises HTTPExceptions from body reading; the problem handler answers it.
                    raise HTTPException(413, f"the request body is over {self.max_body} bytes")
            return message

        await self.app(scope, counting_receive, send)


class BodyDeadline:
    """ASGI middleware: 408 when a request's body has not arrived `seconds` after its headers.

    A client that sends headers and stalls would otherwise hold its socket, and the coroutine waiting for
    the rest, for as long as it likes (uvicorn times out idle keep-alive connections only). The 408 says
    `Connection: close`, so uvicorn closes the socket once it is sent. Once the body is complete, waiting
    for a disconnect (as streaming responses do) has no deadline.
    """

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # FastAPI re-raises HTTPExceptions from body reading; the problem handler answers it.
                raise HTTPException(
                    408, f"the request body did not arrive within {self.seconds:g} s", headers={"Connection": "close"}
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
