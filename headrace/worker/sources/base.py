"""What every source offers the worker: list documents page by page, fetch one within a byte limit."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class DocumentRef:
    """A document the source listed. `version` is a cheap change marker (mtime, ETag) when the source has one."""

    uri: str
    size: int | None = None
    version: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"uri": self.uri, "size": self.size, "version": self.version}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "DocumentRef":
        return cls(uri=payload["uri"], size=payload.get("size"), version=payload.get("version"))


@dataclass(frozen=True)
class Fetched:
    """A document's bytes, with what the source learned while fetching them."""

    data: bytes
    version: str | None = None
    """A change marker the source can check cheaply next time (an HTTP ETag), when the listing had none."""
    media_type: str | None = None
    """The media type the source announced (an HTTP Content-Type), a hint for format detection."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the source knows about the document (`modified`, `declaredLanguage`, S3 `tags` and
    `objectMetadata`), recorded as its searchable metadata; see worker/metadata.py."""


class Source(Protocol):
    """A place documents come from."""

    def pages(self) -> AsyncIterator[list[DocumentRef]]:
        """Every document, in a stable order, a page at a time."""
        ...

    async def fetch(self, ref: DocumentRef, *, max_bytes: int, known_version: str | None = None) -> Fetched | None:
        """The document's bytes, or None when the source can tell the document has not changed since
        `known_version` (the version stored for it last time). Raises DocumentError when it is gone,
        unreadable or over max_bytes, having read no more than max_bytes + 1 bytes; any other
        exception is taken as a passing outage, and the task is retried."""
        ...

    async def close(self) -> None:
        """Release connections and clients; the worker calls it once, when it stops."""
        ...
