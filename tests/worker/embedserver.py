"""A real OpenAI-style embeddings server on loopback: the test decides each answer, requests are logged."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import QuietHandler, serving

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


def _handler(server: EmbeddingServer) -> type[QuietHandler]:
    class Handle(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            server.requests.append((time.monotonic(), body, dict(self.headers)))
            if self.path != "/v1/embeddings":
                self.send_json(404, {"error": "no such route"})
                return
            status, payload, headers = server.answer(body["input"])
            self.send_json(status, payload, headers)

    return Handle


@contextmanager
def embedding_server(answer: Callable[[list[str]], Answer] = ok) -> Iterator[EmbeddingServer]:
    state = EmbeddingServer(answer)
    with serving(_handler(state)) as port:
        state.port = port
        yield state
