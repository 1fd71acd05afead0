"""What the API sends and accepts, camelCase on the wire like the IngestionJob itself."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from headrace.model import KubeModel, Progress, RunSummary

NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Namespace = Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN, max_length=63)]
JobName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=253)]
# Postgres text cannot hold NUL: refuse it at the door rather than fail in the database.
_NO_NUL = r"^[^\x00]*$"
MAX_QUERY_BYTES = 4096
Query = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_BYTES, pattern=_NO_NUL)]
# A GET's q travels in the URL, whose query string is capped (HEADRACE_MAX_QUERY_CHARS): longer questions POST.
GetQuery = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=_NO_NUL)]
SearchMode = Literal["keyword", "semantic", "hybrid"]
QueryVector = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1, max_length=4000)]
UriPrefix = Annotated[str, StringConstraints(max_length=2048, pattern=_NO_NUL)]
Cursor = Annotated[str, StringConstraints(max_length=512, pattern=r"^[A-Za-z0-9_-]+$")]
MetadataKey = Annotated[str, StringConstraints(max_length=256, pattern=_NO_NUL)]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=4096, pattern=_NO_NUL)]
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra={"examples": list(examples)},
    )


class Health(KubeModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, str] = {}
    """Each dependency checked, with its state."""


class RunInfo(KubeModel):
    """One run of a job: a discovery of the source and the ingestion that followed."""

    run: int
    reason: str
    start_time: datetime
    completion_time: datetime | None
    end_reason: str | None = None
    """How the run ended, as a CamelCase word (RunSucceeded, RunFailed, BackoffLimitExceeded, ...)."""
    error: str | None
    """Why the run failed, when it did."""


_JOB_EXAMPLE = {
    "namespace": "default",
    "name": "demo",
    "uid": "3f0e6c0e-8a52-5d0c-9d4e-0f5b1c1f2a11",
    "phase": "Running",
    "reason": None,
    "run": 1,
    "progress": {"total": 41, "succeeded": 20, "failed": 1, "pending": 20, "percent": 51},
    "summary": {"added": 20, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 1},
    "discoveryDone": True,
    "startTime": "2026-11-23T18:00:00Z",
    "completionTime": None,
    "error": None,
    "createdAt": "2026-11-23T17:59:58Z",
    "updatedAt": "2026-11-23T18:00:00Z",
}


class JobStatus(KubeModel):
    """A job's status and the progress of its current run, read from Postgres."""

    model_config = _examples(_JOB_EXAMPLE)

    namespace: str
    name: str
    uid: str
    phase: str
    """Pending, Running, Succeeded, Failed, Interrupted (a local run stopped by Ctrl-C or SIGTERM) or
    Suspended: derived from the current run, as the IngestionJob's `status.phase` is."""
    reason: str | None = None
    """Why the job is Succeeded, Failed or Interrupted, as a CamelCase word: RunSucceeded, RunFailed,
    RunInterrupted, BackoffLimitExceeded, DeadlineExceeded, InvalidSpec, ..."""
    run: int
    """The current (or last) run; 0 before the first."""
    progress: Progress
    summary: RunSummary
    discovery_done: bool
    """Whether the run has listed the whole source, so `progress.total` is final."""
    start_time: datetime | None
    completion_time: datetime | None
    error: str | None
    """Why the run failed, or why the operator refused the spec."""
    created_at: datetime
    updated_at: datetime


class JobDetail(JobStatus):
    """A job's status with its recent runs, newest first."""

    model_config = _examples({**_JOB_EXAMPLE, "runs": []})

    runs: list[RunInfo]


class JobList(KubeModel):
    items: list[JobStatus]
    next_cursor: str | None = None
    """Pass as `cursor` for the next page; null on the last page."""


class DocumentInfo(KubeModel):
    """A document of a job, with the reason when it failed."""

    model_config = _examples(
        {
            "uri": "devils-dictionary/a.txt",
            "title": "A",
            "state": "ingested",
            "error": None,
            "format": "text",
            "bytes": 41210,
            "chunks": 37,
            "run": 1,
            "outcome": "added",
            "updatedAt": "2026-11-23T18:00:01Z",
        }
    )

    uri: str
    title: str
    state: Literal["ingested", "failed"]
    error: str | None
    format: str | None
    bytes: int
    chunks: int
    run: int
    """The run that last processed the document."""
    outcome: Literal["added", "updated", "unchanged", "failed"]
    """What that run did to it."""
    updated_at: datetime


class DocumentList(KubeModel):
    items: list[DocumentInfo]
    next_cursor: str | None = None


class SearchRequest(KubeModel):
    """A search with structured filters."""

    model_config = _examples(
        {"q": '"hacker ethic" -cracker', "namespaces": ["default"], "uriPrefix": "jargon-file/", "limit": 5}
    )

    q: Query
    """The question or words (at most 4 KiB). Keyword matching reads it in websearch syntax:
    `"a phrase"`, `or`, `-excluded`."""
    mode: SearchMode | None = None
    """`keyword` (full text), `semantic` (embeddings) or `hybrid` (both, a weighted sum of their scores).
    By default hybrid when the searched jobs have embeddings, else keyword."""
    vector: QueryVector | None = None
    """The query's embedding, for jobs embedded by an endpoint model (the API does not call tenants'
    endpoints): embed `q` with the same model and pass it here. Built-in-model jobs need none."""
    namespaces: Annotated[list[Namespace], Field(max_length=100)] | None = None
    """Only these namespaces (each must be readable); by default every readable one."""
    job: JobName | None = None
    """Only jobs of this name."""
    uri_prefix: UriPrefix | None = None
    """Only documents whose source URI starts with this."""
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    """Only documents whose metadata contains all these key-value pairs."""
    limit: Annotated[int, Field(ge=1, le=1000)] = 10
    cursor: Cursor | None = None
    """`nextCursor` of the previous page."""
    highlight: Literal["html", "none"] = "html"
    """`html`: snippets are HTML-escaped text with matches in `<mark></mark>`; `none`: plain text."""
    rerank: bool | None = None
    """Re-score the first hits by the platform's reranker (a cross-encoder) and answer its best `limit`,
    as one page (no `nextCursor`); by default as the API is configured. A 400 when the API has no
    reranker. A slow or failing reranker never fails the search: the answer is then the search's own
    order, and the `Headrace-Rerank` response header says which (docs/api.md, "Reranking")."""


class SearchHit(KubeModel):
    """A matching chunk, with the document it comes from."""

    uri: str
    title: str
    namespace: str
    job: str
    chunk: int
    """Position of the chunk in its document, from 0."""
    page: int | None
    """Page of the document the chunk starts on, for paged formats."""
    heading_path: str | None = None
    """The headings the chunk stands under in its document, outermost first, joined with " \u203a "
    ("Installation \u203a Configuration \u203a Proxies"): where to cite the passage from. Null when
    the document has no headings above the chunk, or is of a format without them (PDF, DOCX, plain
    text), or was ingested before Headrace kept heading paths."""
    chunk_id: int
    """The chunk's id: fetch it with its neighbours from `.../ingestionjobs/{job}/chunks/{chunkId}`."""
    score: float
    """Higher is better; comparable within one query only. keyword: BM25; semantic: cosine
    similarity; hybrid: 0 to 1, a weighted sum of the chunk's keyword and semantic scores, each scaled
    to 0..1 within its ranking's candidates (the best 1, the last 0; 0 when the chunk is not among
    them), the weights in docs/api.md ("Search"); reranked (`Headrace-Rerank: applied`): the
    reranker's relevance score."""
    snippet: str
    """The best passages. With `highlight=html` (the default) the text is HTML-escaped and matches are
    wrapped in <mark></mark>, the only tags it holds; with `highlight=none` it is plain text."""
    text: str
    """The chunk's whole text: the passage to hand to a model."""
    metadata: dict[str, Any]
    """The document's metadata (contentType, language, modified, ...)."""


class SearchResults(KubeModel):
    model_config = _examples(
        {
            "items": [
                {
                    "uri": "jargon-file/h.md",
                    "title": "H",
                    "namespace": "default",
                    "job": "demo",
                    "chunk": 12,
                    "page": None,
                    "headingPath": "H \u203a hacker ethic",
                    "chunkId": 5121,
                    "score": 0.4,
                    "snippet": "the <mark>hacker</mark> <mark>ethic</mark> ...",
                    "text": "HACKER ETHIC n. 1. The belief that information-sharing is a powerful positive good ...",
                    "metadata": {"contentType": "text/markdown", "language": "en"},
                }
            ],
            "mode": "hybrid",
            "nextCursor": "WzAuNCwgMTJd",
        }
    )

    items: list[SearchHit]
    mode: SearchMode
    """The mode that ran (the default resolves to hybrid or keyword)."""
    next_cursor: str | None = None


class Passage(KubeModel):
    """One chunk of a document."""

    chunk_id: int
    chunk: int
    """Position of the chunk in its document, from 0."""
    page: int | None
    heading_path: str | None = None
    """The headings the chunk stands under, as in a search hit's `headingPath`."""
    text: str


class PassageContext(KubeModel):
    """A chunk with its neighbours in the same document, in order: the context for a RAG prompt."""

    uri: str
    title: str
    metadata: dict[str, Any]
    chunk_id: int
    """The chunk asked for; `passages` holds it and up to `context` chunks either side."""
    passages: list[Passage]


class DocumentPassages(KubeModel):
    """A document's chunks in order, a page at a time."""

    uri: str
    title: str
    metadata: dict[str, Any]
    chunks: int
    """How many chunks the document has."""
    passages: list[Passage]
    next_cursor: str | None = None
