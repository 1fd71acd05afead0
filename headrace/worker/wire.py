"""The worker API's bodies (version 1): what `RemoteStore` sends and the ingest service answers.

camelCase on the wire and unknown fields refused, as everywhere in Headrace. Every list and string has
a bound, so a request is checked before any of it reaches the database; vectors travel as base64 of
little-endian float32 (what pgvector stores), a sixth of their JSON size and no float parsing.

An answer that is exactly a store record (a leased `queue.Task`, a `vectors.Space`, a
`documents.KnownDocument`) carries the store's dataclass itself, not a copy of its fields: pydantic
validates and serializes a stdlib dataclass inside a model with the model's own config (camelCase,
unknown fields ignored), so the record has one definition and the wire follows it.
"""

import base64
import sys
import uuid
from array import array
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from headrace.model.base import KubeModel
from headrace.store import queue, vectors
from headrace.store.documents import ChunkRecord, DocumentRecord, KnownDocument, Outcome

API_VERSION = "v1"
"""The path prefix of this version of the worker API (see docs/worker-api.md, "Versions")."""

MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""The largest body a worker sends: a bigger group of documents goes in several requests. The service
accepts at least this much (its `ingest_max_body_bytes` defaults to twice as much)."""

MAX_TASKS = 1000
MAX_URIS = 10_000
MAX_URI_CHARS = 8192  # longer URIs are failed by the worker before they are sent (documents.MAX_URI_BYTES)
MAX_DOCUMENTS = 1000
MAX_REASON_CHARS = 16_384

Uri = Annotated[str, Field(max_length=MAX_URI_CHARS)]
Uris = Annotated[list[Uri], Field(max_length=MAX_URIS)]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
"""A task, document or chunk id (bigint)."""
SpaceId = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""A vector space id (integer)."""


class Body(KubeModel):
    """A request body: camelCase, unknown fields refused (a 422 naming them)."""


class Answer(Body):
    """An answer: unknown fields ignored, so a worker of this release reads the answers of a newer service
    of the same API version, which may add fields (docs/worker-api.md, "Versions")."""

    model_config = ConfigDict(extra="ignore")


def encode_vectors(vecs: Sequence[Sequence[float]]) -> str | None:
    """Vectors as base64 of their float32 values, one after another; None for none."""
    if not vecs:
        return None
    flat = array("f", (x for vec in vecs for x in vec))
    if sys.byteorder != "little":  # pragma: no cover - every platform we run on is little-endian
        flat.byteswap()
    return base64.b64encode(flat.tobytes()).decode("ascii")


def decode_vectors(encoded: str | None, count: int) -> list[list[float]]:
    """`count` vectors of equal length from `encode_vectors`'s form; ValueError when they cannot be."""
    if encoded is None:
        return []
    raw = base64.b64decode(encoded, validate=True)
    if len(raw) % 4:
        raise ValueError("vectors must be float32 values, 4 bytes each")
    flat = array("f")
    flat.frombytes(raw)
    if sys.byteorder != "little":  # pragma: no cover
        flat.byteswap()
    if count == 0 or len(flat) % count:
        raise ValueError(f"{len(flat)} vector values do not divide among {count} chunks")
    dims = len(flat) // count
    values = flat.tolist()
    return [values[i * dims : (i + 1) * dims] for i in range(count)]


# --- tasks ------------------------------------------------------------------------------------------------


class HeldTask(Body):
    """A task the worker holds: its id and the token of its lease."""

    id: Id
    lease_token: uuid.UUID

    @classmethod
    def of(cls, task: queue.Task) -> "HeldTask":
        return cls(id=task.id, lease_token=task.lease_token)


def held(tasks: Sequence[HeldTask], job_uid: uuid.UUID) -> list[queue.Task]:
    """Tasks to hand the queue's statements, which read only the id and the lease token of each."""
    return [queue.Task(t.id, job_uid, 0, "ingest", {}, 0, 0, t.lease_token) for t in tasks]


HeldTasks = Annotated[list[HeldTask], Field(max_length=MAX_TASKS)]


class LeaseRequest(Body):
    acks: HeldTasks = []
    """Finished tasks to ack in the same statement."""
    worker: Annotated[str, Field(min_length=1, max_length=253)]
    lease_seconds: Annotated[float, Field(ge=1, le=3600)]
    limit: Annotated[int, Field(ge=1, le=100)]


class LeaseAnswer(Answer):
    acked: list[int]
    leased: list[queue.Task]


class AckRequest(Body):
    tasks: HeldTasks


class AckAnswer(Answer):
    acked: list[int]


class HeartbeatRequest(Body):
    tasks: HeldTasks
    lease_seconds: Annotated[float, Field(ge=1, le=3600)]


class HeartbeatAnswer(Answer):
    kept: list[int]


class FailRequest(Body):
    lease_token: uuid.UUID
    error: Annotated[str, Field(max_length=MAX_REASON_CHARS)]
    backoff_seconds: Annotated[float, Field(ge=0, le=86_400)]
    permanent: bool = False


class FailAnswer(Answer):
    outcome: Literal["retry", "dead", "lost"]


class ReleaseRequest(Body):
    lease_token: uuid.UUID


class ReleaseAnswer(Answer):
    released: bool


class TasksAnswer(Answer):
    tasks: list[queue.Task]


class DrainedAnswer(Answer):
    drained: bool


class FinishedAnswer(Answer):
    finished: bool
    """Whether this call closed the run (false: not drained yet, or closed by another worker)."""


class NewTaskBody(Body):
    kind: Literal["ingest"]
    """Workers enqueue ingest batches only; discovery is the operator's to start."""
    dedupe_key: Annotated[str, Field(min_length=1, max_length=512)]
    payload: dict[str, Any]

    def new_task(self) -> queue.NewTask:
        return queue.NewTask(self.kind, self.dedupe_key, self.payload)


class DiscoveredRequest(Body):
    tasks: Annotated[list[NewTaskBody], Field(max_length=MAX_TASKS)]
    max_attempts: Annotated[int, Field(ge=1, le=100)]
    total: Annotated[int, Field(ge=0)]
    done: bool


# --- the job and its vector space ---------------------------------------------------------------------


class JobBody(Answer):
    uid: uuid.UUID
    namespace: str
    name: str
    generation: int
    spec: dict[str, Any]
    current_run: int
    namespace_uid: uuid.UUID | None = None


class SpaceAnswer(Answer):
    space: vectors.Space | None
    """None when the database cannot store vectors (no pgvector), or the job wants none."""


# --- documents ----------------------------------------------------------------------------------------


class UrisRequest(Body):
    uris: Uris


class KnownAnswer(Answer):
    documents: list[KnownDocument]


class UrisAnswer(Answer):
    uris: list[str]


class EntryHashesRequest(Body):
    uri: Uri
    fingerprint: Annotated[str, Field(max_length=256)]


class EntryHashesAnswer(Answer):
    hashes: dict[str, str]


class ChunkBody(Body):
    ordinal: Annotated[int, Field(ge=0, le=2**31 - 1)]
    content: str
    page: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    heading_path: str | None = None


class DocumentBody(Body):
    uri: Uri
    title: Annotated[str, Field(max_length=65_536)]
    content_hash: Annotated[str, Field(max_length=256)]
    fingerprint: Annotated[str, Field(max_length=256)]
    format: Annotated[str, Field(max_length=256)]
    bytes: Annotated[int, Field(ge=0)]
    chunks: list[ChunkBody]
    source_version: Annotated[str, Field(max_length=4096)] | None = None
    metadata: dict[str, Any] = {}
    vectors: str | None = None
    """One vector per chunk, `encode_vectors`'s form; absent when the document has none."""

    @classmethod
    def of(cls, doc: DocumentRecord, vecs: Sequence[Sequence[float]]) -> "DocumentBody":
        return cls(
            uri=doc.uri,
            title=doc.title,
            content_hash=doc.content_hash,
            fingerprint=doc.fingerprint,
            format=doc.format,
            bytes=doc.bytes,
            chunks=[
                ChunkBody(ordinal=c.ordinal, content=c.content, page=c.page, heading_path=c.heading_path)
                for c in doc.chunks
            ],
            source_version=doc.source_version,
            metadata=doc.metadata,
            vectors=encode_vectors(vecs),
        )

    def record(self) -> tuple[DocumentRecord, list[list[float]]]:
        """The document and its vectors; ValueError when the vectors do not divide among its chunks."""
        chunks = [ChunkRecord(c.ordinal, c.content, c.page, c.heading_path) for c in self.chunks]
        doc = DocumentRecord(
            uri=self.uri,
            title=self.title,
            content_hash=self.content_hash,
            fingerprint=self.fingerprint,
            format=self.format,
            bytes=self.bytes,
            chunks=chunks,
            source_version=self.source_version,
            metadata=self.metadata,
        )
        return doc, decode_vectors(self.vectors, len(chunks))


class StoreRequest(Body):
    space_id: SpaceId | None = None
    """The vector space the documents' vectors are in (`SpaceAnswer`); None when they carry none."""
    documents: Annotated[list[DocumentBody], Field(min_length=1, max_length=MAX_DOCUMENTS)]


class StoreAnswer(Answer):
    outcomes: dict[str, Outcome]
    refused: dict[str, str]


class OutcomesRequest(Body):
    unchanged: Uris = []
    unchanged_archives: Uris = []
    versions: Annotated[dict[Uri, Annotated[str, Field(max_length=4096)]], Field(max_length=MAX_URIS)] = {}
    failures: Annotated[dict[Uri, Annotated[str, Field(max_length=MAX_REASON_CHARS)]], Field(max_length=MAX_URIS)] = {}


# --- re-embedding ---------------------------------------------------------------------------------------


class StaleRequest(Body):
    space_id: SpaceId | None
    uris: Uris = []
    archives: Uris = []


class DocumentRef(Answer):
    id: int
    uri: str


class StaleAnswer(Answer):
    documents: list[DocumentRef]


class SpaceRequest(Body):
    space_id: SpaceId


class ChunkText(Answer):
    id: int
    content: str


class ChunksAnswer(Answer):
    title: str
    chunks: list[ChunkText]


class ChunkVectorsRequest(Body):
    space_id: SpaceId
    chunk_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_TASKS)]
    vectors: str
    """One vector per chunk id, `encode_vectors`'s form."""


class OutcomeAnswer(Answer):
    outcome: Outcome | None
    """None when nothing was written (the document changed meanwhile, or some chunk lacks a vector)."""
