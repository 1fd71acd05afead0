"""The built-in model: wordllama's `l2_supercat` static embeddings (256 dimensions), loaded from the
files its wheel ships, so it works offline in a pod with a read-only filesystem and no GPU.

wordllama's loader looks for the tokenizer in the wrong package folder and then downloads it;
pointing `cache_dir` at the package folder and disabling downloads finds both files offline.
"""

import asyncio
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from headrace.embedding import EmbeddingError, Vector, check_vectors
from headrace.model.spec import BUILTIN_EMBEDDING_DIMENSIONS, BUILTIN_EMBEDDING_MODEL

_LOCK = threading.Lock()


@cache
def _model() -> Any:
    import wordllama
    from wordllama import WordLlama

    folder = Path(wordllama.__file__).parent
    try:
        return WordLlama.load(
            config="l2_supercat", dim=BUILTIN_EMBEDDING_DIMENSIONS, cache_dir=folder, disable_download=True
        )
    except Exception as exc:  # a broken install must read as a model problem, not a crash
        raise EmbeddingError(f"the built-in model could not be loaded: {type(exc).__name__}: {exc}") from exc


def embed_sync(texts: Sequence[str]) -> list[Vector]:
    """Unit-length vectors of `texts`, computed in this thread."""
    with _LOCK:
        model = _model()
    matrix = model.embed(list(texts), norm=True)
    return check_vectors(matrix.tolist(), expected=len(texts), dimensions=BUILTIN_EMBEDDING_DIMENSIONS)


async def embed_query(text: str) -> Vector:
    """The vector of one short text, a search query: computed in the calling thread once the model is
    loaded (about 0.1 ms for a query of a few words, less than handing it to a worker thread, which
    on a busy machine waits for the CPU twice). The first call loads the model in a thread."""
    if _model.cache_info().currsize == 0:
        await asyncio.to_thread(_model)
    return embed_sync([text])[0]


class BuiltinEmbedder:
    """wordllama in a thread, so embedding a long document does not stall heartbeats."""

    model = BUILTIN_EMBEDDING_MODEL
    dimensions = BUILTIN_EMBEDDING_DIMENSIONS

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        return await asyncio.to_thread(embed_sync, texts)

    async def close(self) -> None:
        return None
