"""A real HTTP server on loopback for source tests: routes set by the test, ETags honoured, requests logged."""

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.loopback import QuietHandler, serving

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Site:
    """What the server serves: static bodies with ETags, or handlers for misbehaviour."""

    port: int = 0
    bodies: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)
    log: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def statuses(self, path: str) -> list[int]:
        return [status for logged, status, _ in self.log if logged == path]


def _serve(site: Site) -> type[QuietHandler]:
    class Handle(QuietHandler):
        def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            site.log.append((self.path, status, dict(self.headers)))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path in site.handlers:
                site.log.append((self.path, 0, dict(self.headers)))
                site.handlers[self.path](self)
                return
            if self.path not in site.bodies:
                self.reply(404, b"not here")
                return
            body, media_type = site.bodies[self.path]
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.reply(304, headers={"ETag": etag})
                return
            self.reply(200, body, {"Content-Type": media_type, "ETag": etag})

    return Handle


@contextmanager
def serve(site: Site) -> Iterator[Site]:
    with serving(_serve(site)) as port:
        site.port = port
        yield site


def redirect(location: str) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(302)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        request.end_headers()

    return handle


def dribble(byte_every_seconds: float, total: int) -> Handler:
    """Headers at once, then one byte at a time: each read is quick, the whole never ends in time."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(total))
        request.end_headers()
        try:
            for _ in range(total):
                request.wfile.write(b"x")
                request.wfile.flush()
                time.sleep(byte_every_seconds)
        except OSError:
            pass  # the client gave up, as it should

    return handle


def endless(request: BaseHTTPRequestHandler) -> None:
    """A body with no Content-Length that never stops coming."""
    request.send_response(200)
    request.send_header("Content-Type", "text/plain")
    request.end_headers()
    try:
        while True:
            request.wfile.write(b"words " * 1000)
    except OSError:
        pass


def require_header(name: str, value: str, body: bytes) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        ok = request.headers.get(name) == value
        payload = body if ok else b"forbidden"
        request.send_response(200 if ok else 403)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    return handle
