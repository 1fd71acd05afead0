"""A real rerank server on loopback (`POST /rerank`, Cohere's or TEI's shape): scores a document by the
query's words it holds, per word of it, so a short passage that says the query beats a long one that
mentions it. The test decides each answer; requests are logged, and `hold` keeps answers back."""

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import QuietHandler, serving

# (status, JSON body or raw bytes) for a request body
Answer = tuple[int, Any]


def overlap(query: str, document: str) -> float:
    """The share of the document's words that are the query's."""
    asked = set(re.findall(r"\w+", query.lower()))
    words = re.findall(r"\w+", document.lower())
    return sum(w in asked for w in words) / max(len(words), 1)


def cohere(body: dict[str, Any]) -> Answer:
    scored = sorted(
        ({"index": i, "relevance_score": overlap(body["query"], d)} for i, d in enumerate(body["documents"])),
        key=lambda r: -r["relevance_score"],
    )
    return 200, {"results": scored[: body.get("top_n") or len(scored)]}


def tei(body: dict[str, Any]) -> Answer:
    return 200, sorted(
        ({"index": i, "score": overlap(body["query"], t)} for i, t in enumerate(body["texts"])),
        key=lambda r: -r["score"],
    )


@dataclass
class RerankServer:
    answer: Callable[[dict[str, Any]], Answer] = cohere
    port: int = 0
    requests: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    """Answers wait until this is set (it starts set); the server's shutdown sets it."""

    def __post_init__(self) -> None:
        self.hold.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(server: RerankServer) -> type[QuietHandler]:
    class Handle(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            server.requests.append((body, dict(self.headers)))
            server.hold.wait()
            status, payload = server.answer(body) if self.path == "/rerank" else (404, {"error": "no such route"})
            with contextlib.suppress(OSError):  # the API gave up waiting and closed the connection
                self.send_json(status, payload)

    return Handle


@contextmanager
def rerank_server(answer: Callable[[dict[str, Any]], Answer] = cohere) -> Iterator[RerankServer]:
    state = RerankServer(answer)
    with serving(_handler(state)) as port:
        state.port = port
        try:
            yield state
        finally:
            state.hold.set()  # answers held back go out before the server shuts down
