"""An OpenAI-compatible embeddings API (`POST {url}/embeddings`): OpenAI, TEI, vLLM, Ollama, LiteLLM.

A request that fails for a passing reason (a connection error, a timeout, 429, 5xx) is retried with
exponential backoff, waiting at least what `Retry-After` asks; after `maxAttempts` it raises
EmbeddingError with the last reason, and the worker fails the document with it. Nothing is stored
until every chunk of a document has its vector.
"""

import asyncio
import email.utils
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from headrace.embedding import EmbeddingError, Vector, check_vectors
from headrace.keepalive import CONNECTIONS
from headrace.model import EmbeddingEndpoint

API_KEY = "apiKey"
_RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
_MAX_WAIT_SECONDS = 120.0
_BASE_WAIT_SECONDS = 0.5


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _read_api_key(spec: EmbeddingEndpoint, secrets_dir: Path | None) -> str | None:
    if spec.api_key_secret_ref is None or secrets_dir is None:
        return None
    path = secrets_dir / spec.api_key_secret_ref.name / API_KEY
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise EmbeddingError(f"Secret {spec.api_key_secret_ref.name!r} has no key {API_KEY} mounted at {path}") from exc


class EndpointEmbedder:
    """Batches of `batchSize` texts per request, each validated before any is returned."""

    def __init__(
        self, spec: EmbeddingEndpoint, *, secrets_dir: Path | None = None, client: httpx.AsyncClient | None = None
    ) -> None:
        self.spec = spec
        self.model = spec.model
        self.dimensions = spec.dimensions
        headers = {"User-Agent": "headrace"}
        key = _read_api_key(spec, secrets_dir)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = client or httpx.AsyncClient(
            headers=headers, timeout=spec.timeout_seconds, follow_redirects=False, limits=CONNECTIONS
        )
        self.url = spec.url.rstrip("/") + "/embeddings"

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors: list[Vector] = []
        size = self.spec.batch_size
        for start in range(0, len(texts), size):
            vectors += await self._batch(texts[start : start + size])
        return vectors

    async def _batch(self, texts: Sequence[str]) -> list[Vector]:
        body: dict[str, Any] = {"model": self.spec.model, "input": list(texts), "encoding_format": "float"}
        if self.spec.send_dimensions:
            body["dimensions"] = self.spec.dimensions
        reason = ""
        for attempt in range(1, self.spec.max_attempts + 1):
            wait = min(_MAX_WAIT_SECONDS, _BASE_WAIT_SECONDS * 2 ** (attempt - 1))
            try:
                response = await self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    return self._vectors(response, len(texts))
                reason = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in _RETRYABLE:
                    raise EmbeddingError(f"embedding endpoint {self.url} answered {reason}")
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None:
                    wait = min(_MAX_WAIT_SECONDS, max(wait, asked))
            if attempt < self.spec.max_attempts:
                await asyncio.sleep(wait)
        raise EmbeddingError(f"embedding endpoint {self.url} failed {self.spec.max_attempts} attempts; last: {reason}")

    def _vectors(self, response: httpx.Response, expected: int) -> list[Vector]:
        try:
            data = response.json()["data"]
            ordered = sorted(data, key=lambda item: item.get("index", 0))
            raw = [item["embedding"] for item in ordered]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingError(
                f"embedding endpoint {self.url} answered without an OpenAI-style `data` list: {exc}"
            ) from exc
        if not all(isinstance(vector, list) for vector in raw):
            raise EmbeddingError(
                f"embedding endpoint {self.url} answered with embeddings that are not lists of numbers"
            )
        try:
            return check_vectors(raw, expected=expected, dimensions=self.dimensions)
        except (TypeError, ValueError) as exc:
            raise EmbeddingError(f"embedding endpoint {self.url} answered with non-numeric values: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()
