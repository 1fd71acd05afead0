"""What every source offers the worker: list documents page by page, fetch one within a byte limit."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
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


class Source(Protocol):
    """A place documents come from."""

    def pages(self) -> AsyncIterator[list[DocumentRef]]:
        """Every document, in a stable order, a page at a time."""
        ...

    async def fetch(self, ref: DocumentRef, *, max_bytes: int) -> bytes:
        """The document's bytes. Raises DocumentError when it is gone, unreadable or over max_bytes,
        having read no more than max_bytes + 1 bytes."""
        ...
