"""A real OpenAI-style embeddings server on loopback: the test decides each answer, requests are logged."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (status, JSON body or raw bytes, headers) for a list of inputs
Answer = tuple[int, Any, dict[str, str]]


def vectors_for(inputs: list[str], dimensions: int = 3) -> list[list[float]]:
    """Deterministic vectors: texts with the same length point the same way."""
    return [[float(len(text) % 7 + 1), 1.0, 0.5, *[0.25] * (dimensions - 3)] for text in inputs]


def ok(inputs: list[str], dimensions: int = 3) -> Answer:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors_for(inputs, dimensions))]
    return 200, {"object": "list", "data": data, "model": "tiny"}, {}


@dataclass
class EmbeddingServer:
    answer: Callable[[list[str]], Answer] = ok
    port: int = 0
    requests: list[tuple[float, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _handler(server: EmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handle(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append((time.monotonic(), body, dict(self.headers)))
            if self.path != "/v1/embeddings":
                status, payload, headers = 404, {"error": "no such route"}, {}
            else:
                status, payload, headers = server.answer(body["input"])
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handle


@contextmanager
def embedding_server(answer: Callable[[list[str]], Answer] = ok) -> Iterator[EmbeddingServer]:
    state = EmbeddingServer(answer)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
