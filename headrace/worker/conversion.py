"""From one fetched object to 1..n documents: archives are opened, every other format extracted and chunked.

This runs inside the extraction sandbox (see `sandbox.py`). It reports what it does as a stream of
messages, so the worker can store each document as it arrives and knows which one was in progress
if the sandbox has to be killed.
"""

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from headrace.model import Chunking, Limits
from headrace.worker.archives import Budget, tar_entries, zip_entries
from headrace.worker.chunker import chunk_sections
from headrace.worker.errors import DocumentError
from headrace.worker.extract import ARCHIVE_FORMATS, extract, sniff_format
from headrace.worker.metadata import clean, detect_language

Message = dict[str, Any]
ENTRY_SEPARATOR = "!/"


@dataclass(frozen=True)
class Request:
    """One fetched object to process, and what the index already holds for the documents inside it."""

    uri: str
    limits: Limits
    chunking: Chunking
    media_type: str | None = None
    known: dict[str, str] = field(default_factory=dict)
    """Content hashes of archive entries already ingested with the current fingerprint: equal
    entries are reported unchanged without being extracted."""
    skip: frozenset[str] = frozenset()
    """URIs already reported by an earlier, killed attempt at this request: passed over."""

    def to_wire(self) -> Message:
        return {
            "uri": self.uri,
            "limits": self.limits.to_wire(),
            "chunking": self.chunking.to_wire(),
            "mediaType": self.media_type,
            "known": self.known,
            "skip": sorted(self.skip),
        }

    @classmethod
    def from_wire(cls, wire: Message) -> "Request":
        return cls(
            uri=wire["uri"],
            limits=Limits.model_validate(wire["limits"]),
            chunking=Chunking.model_validate(wire["chunking"]),
            media_type=wire.get("mediaType"),
            known=wire.get("known", {}),
            skip=frozenset(wire.get("skip", [])),
        )


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def process(request: Request, data: bytes) -> Iterator[Message]:
    """Messages, in order: `begin` when work on a URI starts, then for that URI exactly one of
    `document`, `unchanged`, `failed` or (an opened archive, after its entries) `container`."""
    budget = Budget(request.limits.max_total_uncompressed_bytes)
    yield from _object(request, request.uri, data, request.media_type, 0, budget)


def _object(
    request: Request, uri: str, data: bytes, media_type: str | None, depth: int, budget: Budget
) -> Iterator[Message]:
    if uri in request.skip:
        return
    yield {"type": "begin", "uri": uri}
    digest = content_hash(data)
    limits = request.limits
    try:
        kind = sniff_format(data, uri, media_type)
        if kind in ARCHIVE_FORMATS:
            if depth >= limits.max_nesting_depth:
                raise DocumentError(
                    f"archive nested {depth} deep, at limits.maxNestingDepth ({limits.max_nesting_depth})"
                    if depth
                    else "archives are not opened: limits.maxNestingDepth is 0"
                )
            entries = zip_entries(data, limits, budget) if kind == "zip" else tar_entries(data, limits, budget)
            count = 0
            for entry in entries:
                count += 1
                entry_uri = f"{uri}{ENTRY_SEPARATOR}{entry.name}"
                if entry.data is None:
                    if entry_uri not in request.skip:
                        yield {"type": "failed", "uri": entry_uri, "reason": entry.error}
                    continue
                yield from _object(request, entry_uri, entry.data, None, depth + 1, budget)
            yield {"type": "container", "uri": uri, "format": kind, "hash": digest, "bytes": len(data)} | {
                "entries": count
            }
            return
        if depth > 0 and request.known.get(uri) == digest:
            yield {"type": "unchanged", "uri": uri}
            return
        started = time.perf_counter()
        extracted = extract(data, name=uri, limits=limits, media_type=media_type)
        chunks = chunk_sections(extracted.sections, request.chunking)
        seconds = time.perf_counter() - started
        if not chunks:
            raise DocumentError("no text to index after extraction")
        yield {
            "type": "document",
            "uri": uri,
            "title": extracted.title,
            "format": extracted.format,
            "hash": digest,
            "bytes": len(data),
            "chunks": [[c.ordinal, c.text, c.page] for c in chunks],
            # Beside `chunks`, not in it: a parent of an earlier release reads each chunk as three items.
            "headingPaths": [c.heading_path for c in chunks],
            # Timed here, in the sandbox, and observed by the worker: the child's metrics would die with it.
            "seconds": seconds,
            "metadata": clean(extracted.metadata),
            "language": detect_language(" ".join(c.text for c in chunks[:3])),
        }
    except DocumentError as exc:
        yield {"type": "failed", "uri": uri, "reason": str(exc)}
    except MemoryError:
        yield {"type": "failed", "uri": uri, "reason": "ran out of memory while extracting (the sandbox memory limit)"}
    except RecursionError:
        yield {"type": "failed", "uri": uri, "reason": "structure nested too deeply to extract"}
    except Exception as exc:  # an extractor bug on odd input must not take the other documents with it
        yield {"type": "failed", "uri": uri, "reason": f"extraction failed: {type(exc).__name__}: {exc}"}
