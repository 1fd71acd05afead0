"""Turning text into vectors: the built-in model or an OpenAI-compatible endpoint, one interface.

The worker embeds chunks with it (a bounded stage between chunking and storing) and the API embeds
queries with it, so a job's chunks and the questions asked of them share one model.
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from headrace.model import Embedding

Vector = list[float]


def embedding_input(title: str, text: str) -> str:
    """The text a chunk is embedded from: its document's title, a blank line, then the chunk's text
    (contextual chunk embedding, `EMBEDDING_INPUT`). A chunk alone often does not say what it is
    about ("Return the number of items"): the title says of what. A document without a title, or a
    chunk that already begins with it (a plain-text file's title is its first line), gives the text
    alone. Queries are embedded as asked."""
    title = title.strip()
    return f"{title}\n\n{text}" if title and not text.lstrip().startswith(title) else text


class EmbeddingError(Exception):
    """The model could not embed the input, or answered with something that is not a vector per input."""


class Embedder(Protocol):
    """Something that embeds texts in one vector space."""

    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit-length or raw vector per text, in order. Raises EmbeddingError."""
        ...

    async def close(self) -> None: ...


def check_vectors(vectors: Sequence[Sequence[float]], *, expected: int, dimensions: int) -> list[Vector]:
    """The vectors as plain lists, or EmbeddingError saying what is wrong with them: too few or too
    many, a wrong length, a NaN or infinity, or all zeros (which has no direction to compare)."""
    if len(vectors) != expected:
        raise EmbeddingError(f"the model returned {len(vectors)} vectors for {expected} inputs")
    checked = []
    for index, vector in enumerate(vectors):
        if len(vector) != dimensions:
            raise EmbeddingError(f"vector {index} has {len(vector)} dimensions, spec.embedding expects {dimensions}")
        values = [float(x) for x in vector]
        if not all(math.isfinite(x) for x in values):
            raise EmbeddingError(f"vector {index} holds NaN or infinite values")
        if not any(values):
            raise EmbeddingError(f"vector {index} is all zeros")
        checked.append(values)
    return checked


def open_embedder(spec: Embedding, *, secrets_dir: Path | None = None) -> Embedder | None:
    """The embedder the spec asks for, or None when embeddings are off. Secrets (the endpoint's API
    key) are read from `secrets_dir`; without one, no key is sent."""
    if spec.provider == "builtin":
        from headrace.embedding.builtin import BuiltinEmbedder

        return BuiltinEmbedder()
    if spec.provider == "endpoint":
        from headrace.embedding.endpoint import EndpointEmbedder

        assert spec.endpoint is not None
        return EndpointEmbedder(spec.endpoint, secrets_dir=secrets_dir)
    return None
