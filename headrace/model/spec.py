"""The IngestionJob spec: what to ingest, how to split it, and how many workers do it.

Every field's docstring becomes its `kubectl explain` text once the CRD is generated from these models.
"""

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from croniter import CroniterBadDateError, croniter
from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from headrace.model.base import KubeModel

MiB = 1024 * 1024

# Bump when extraction or chunking changes what is stored for the same input, so every
# document is re-processed on the next run instead of being skipped as unchanged.
# Cutting HTML and Markdown at their headings (heading paths, migration 0012) did not bump it: a
# document stored before keeps its chunks, with no heading path, until its bytes change, rather than
# every job re-extracting and re-embedding everything at its first run after the upgrade.
PIPELINE_VERSION = 1

EMBEDDING_INPUT = "title+chunk"
"""What a chunk's vector is computed from (headrace.embedding.embedding_input): its document's title,
then its text. Part of the run fingerprint of a job with embeddings; changing it needs a migration
that marks the documents embedded from the input it replaces (`documents.embedding_input`, as 0009
does for the chunk text alone), so the next run re-embeds them from their stored chunks."""


CRON_SHAPE = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$"
"""Five space-separated fields or a macro: the shape the CRD's pattern checks at admission (CEL cannot
parse cron); whether the fields make sense, and ever fire, is checked by the model."""

DNS1123Subdomain = Annotated[
    str,
    StringConstraints(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Quantity = Annotated[str, StringConstraints(pattern=r"^[+]?[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")]


class VolumeSource(KubeModel):
    """Documents on a filesystem: a PersistentVolumeClaim in the cluster, a local folder in local mode."""

    claim_name: DNS1123Subdomain | None = None
    """Name of a PersistentVolumeClaim in the job's namespace, mounted read-only in every worker pod.
    Required in a cluster; ignored by `headrace run`, which reads the local filesystem."""

    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = "."
    """Folder to ingest, relative to the root of the claim. In local mode, relative to the folder
    holding the manifest (or absolute)."""

    include: Annotated[list[Glob], Field(min_length=1, max_length=64)] = ["**/*"]
    """Glob patterns, relative to `path`, of the files to ingest. `**` matches any number of folders."""

    exclude: Annotated[list[Glob], Field(max_length=64)] = []
    """Glob patterns, relative to `path`, of files to skip even when `include` matches them."""

    @field_validator("path")
    @classmethod
    def _no_parent_segments(cls, value: str) -> str:
        if ".." in value.replace("\\", "/").split("/"):
            raise ValueError("must not contain '..' segments")
        return value


class SecretRef(KubeModel):
    """A Secret in the job's namespace. Its keys are mounted as files in every worker pod."""

    name: DNS1123Subdomain
    """Name of the Secret. Not one of Headrace's own (the workers' database credential, the worker image's
    pull Secrets): the operator refuses those, naming this field."""


# No userinfo (`user:password@`): credentials come from Secrets, never from spec fields.
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#@]+([/?#][^\s]*)?$", max_length=4096)]


class HttpSource(KubeModel):
    """Documents served over HTTP(S): a list of URLs, sitemaps, or both."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.urls) ? size(self.urls) : 0)"
                    " + (has(self.sitemaps) ? size(self.sitemaps) : 0) > 0",
                    "message": "set urls, sitemaps or both",
                }
            ]
        }
    )

    urls: Annotated[list[HttpUrl], Field(max_length=10_000)] = []
    """Document URLs to ingest, each http:// or https://."""

    sitemaps: Annotated[list[HttpUrl], Field(max_length=100)] = []
    """sitemap.xml URLs (plain or gzipped). Every page they list is ingested; sitemap indexes are
    followed to the sitemaps they name."""

    headers_secret_ref: SecretRef | None = None
    """A Secret whose every key is an HTTP header name and whose value is that header's value, sent
    with every request (e.g. `Authorization`). They are dropped when a redirect leaves the host."""

    allow_private_networks: bool = False
    """Allow requests to loopback, private (RFC 1918, unique-local), link-local and other non-public
    addresses. Off by default, so a URL or redirect cannot reach the cluster's own services or a
    cloud metadata endpoint. Checked on the resolved address of every connection, redirects included.
    Honoured only when the installation permits it (the chart's `operator.allowPrivateNetworks`);
    otherwise the operator refuses the spec."""

    max_redirects: Annotated[int, Field(ge=0, le=20)] = 5
    """Redirects followed per request before the document fails."""

    connect_timeout_seconds: Annotated[float, Field(ge=0.1, le=300)] = 10.0
    """Longest wait for a connection to be established."""

    read_timeout_seconds: Annotated[float, Field(ge=0.1, le=600)] = 30.0
    """Longest wait for any single read from the server."""

    timeout_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 120.0
    """Longest a whole request may take, redirects and body included, so a server that dribbles
    bytes cannot hold a worker. A document that exceeds it fails."""

    user_agent: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "headrace"
    """User-Agent header sent with every request."""

    @model_validator(mode="after")
    def _something_to_fetch(self) -> "HttpSource":
        if not self.urls and not self.sitemaps:
            raise ValueError("set urls, sitemaps or both")
        return self


class S3Source(KubeModel):
    """Objects in an S3 bucket, on AWS or any S3-compatible store (MinIO, Ceph RGW, R2, ...)."""

    bucket: Annotated[str, StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")]
    """Bucket name."""

    prefix: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Only keys starting with this are listed (e.g. `reports/2024/`)."""

    include: Annotated[list[Glob], Field(min_length=1, max_length=64)] = ["**/*"]
    """Glob patterns, relative to `prefix`, of the keys to ingest. `**` matches any number of folders."""

    exclude: Annotated[list[Glob], Field(max_length=64)] = []
    """Glob patterns, relative to `prefix`, of keys to skip even when `include` matches them."""

    region: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "us-east-1"
    """Region of the bucket (used for request signing)."""

    endpoint: HttpUrl | None = None
    """Endpoint URL of an S3-compatible store, e.g. `https://minio.example.com`. Empty means AWS. Like
    HTTP sources, it must resolve to public addresses unless `allowPrivateNetworks` is set."""

    allow_private_networks: bool = False
    """Allow an `endpoint` on loopback, private, link-local and other non-public addresses (an in-cluster
    MinIO, say). Checked on the resolved address before every request. Honoured only when the
    installation permits it (the chart's `operator.allowPrivateNetworks`); otherwise the operator
    refuses the spec."""

    path_style: bool = False
    """Address the bucket in the path (`endpoint/bucket/key`) instead of the host name
    (`bucket.endpoint/key`). Most self-hosted stores need this."""

    credentials_secret_ref: SecretRef | None = None
    """A Secret with keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    `AWS_SESSION_TOKEN`. Without it, requests are anonymous (public buckets) unless
    `ambientCredentials` is set."""

    ambient_credentials: bool = False
    """Without `credentialsSecretRef`, sign requests with the worker pod's default AWS credential chain
    (IAM Roles for Service Accounts, EKS Pod Identity, ...). Off by default: on a node whose metadata
    endpoint pods can reach, that chain ends at the node's own instance role, which is not the
    tenant's to use."""


class Source(KubeModel):
    """Where the documents come from. Set exactly one source."""

    # The CRD says the same as _exactly_one: with CEL where the server has it, with maxProperties everywhere.
    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _one_of_rule(schema))

    volume: VolumeSource | None = None
    """Ingest files from a volume."""

    http: HttpSource | None = None
    """Ingest web pages and files over HTTP(S)."""

    s3: S3Source | None = None
    """Ingest objects from an S3-compatible bucket."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Source":
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            options = ", ".join(type(self).model_fields)
            raise ValueError(f"set exactly one source ({options}); got {len(chosen)}")
        return self

    @property
    def kind(self) -> str:
        """The name of the source that is set, e.g. `volume`."""
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


def _one_of_rule(schema: dict[str, Any]) -> None:
    names = list(schema["properties"])
    counted = " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in names)
    schema["minProperties"] = 1
    schema["maxProperties"] = 1
    schema["x-kubernetes-validations"] = [
        {"rule": f"{counted} == 1", "message": f"set exactly one source ({', '.join(names)})"}
    ]


class Chunking(KubeModel):
    """How extracted text is split into chunks, the unit that search returns."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.overlap) || !has(self.targetSize) || self.overlap * 2 <= self.targetSize",
                    "message": "overlap must be at most half of targetSize",
                }
            ]
        }
    )

    target_size: Annotated[int, Field(ge=100, le=20_000)] = 1500
    """Target chunk length in characters. A chunk is cut at the last boundary before this length."""

    overlap: Annotated[int, Field(ge=0, le=5_000)] = 150
    """Characters at the end of a chunk repeated at the start of the next, so a passage that spans
    a cut is still found whole. Must be less than half of `targetSize`."""

    boundary: Literal["paragraph", "sentence", "none"] = "paragraph"
    """Preferred place to cut: at paragraph breaks (falling back to sentences, then words),
    at sentence ends (falling back to words), or anywhere at a word break."""

    @model_validator(mode="after")
    def _overlap_fits(self) -> "Chunking":
        if self.overlap * 2 > self.target_size:
            raise ValueError(f"overlap ({self.overlap}) must be at most half of targetSize ({self.target_size})")
        return self


class Autoscaling(KubeModel):
    """Who sets the worker count while a run is active."""

    mode: Literal["hpa", "builtin", "none"] = "hpa"
    """`hpa`: a HorizontalPodAutoscaler scales the IngestionJob through its /scale subresource.
    `builtin`: the operator sets replicas to ceil(pending tasks / tasksPerWorker), clamped to
    [min, max], for clusters without a metrics pipeline. `none`: replicas are left to you
    (`kubectl scale`)."""

    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 80
    """Average CPU utilisation of the worker pods, in percent of their request, that the HPA aims for."""

    tasks_pending_per_worker: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """When set, the HPA also scales on the External metric `headrace_tasks_pending`, aiming for
    this many pending tasks per worker. Needs the chart's prometheus-adapter rule."""


class Toleration(KubeModel):
    """A Kubernetes toleration for the worker pods (see core/v1 Toleration)."""

    key: str | None = None
    """Taint key the toleration applies to. Empty with operator Exists matches all taints."""

    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the default)."""

    value: str | None = None
    """Taint value the toleration matches, with operator Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""

    toleration_seconds: int | None = None
    """For NoExecute, how long the pod stays bound after the taint appears."""


class Resources(KubeModel):
    """Compute resources of each worker container (see core/v1 ResourceRequirements)."""

    requests: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] | None = None
    """Resources the scheduler reserves for each worker. The HPA's CPU target is relative to the
    cpu request. Unset means the operator's default requests."""

    limits: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] | None = None
    """Hard caps for each worker container. Unset means the operator's default limits."""


class Workers(KubeModel):
    """How many worker pods process the job, and how they scale."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "min must not exceed max",
                }
            ]
        }
    )

    min: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest workers while the job has work."""

    max: Annotated[int, Field(ge=1, le=1000)] = 4
    """Most workers at once."""

    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Desired workers now, within [min, max]: the job never runs fewer than `min` workers while it
    has work, nor more than `max`. Owned by whoever scales the job (the HPA, the operator in builtin
    mode, or `kubectl scale`). The API server fills in the default, so the /scale subresource has a
    value to read from the moment the job is created."""

    tasks_per_worker: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Pending tasks one worker is expected to handle; the builtin autoscaler divides the backlog by it."""

    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 50
    """Documents per ingest task: the unit a worker leases, retries and acknowledges."""

    resources: Resources | None = None
    """CPU and memory of each worker container. What is unset (requests, limits, or both) comes from
    the operator's default: the chart's `worker.resources`, built in requests cpu 500m and memory 512Mi,
    limits memory 1Gi."""

    node_selector: dict[str, str] = {}
    """Node labels a worker pod's node must carry."""

    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Taints the worker pods tolerate."""

    autoscaling: Autoscaling = Autoscaling()
    """Who owns the replica count while the run is active."""

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "Workers":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    @property
    def desired(self) -> int:
        """The worker count asked for: `replicas`, clamped to [min, max] (`kubectl scale` through /scale
        is bounded by neither, the HPA and the builtin autoscaler by both)."""
        return max(self.min, min(self.replicas, self.max))


class Retries(KubeModel):
    """How a failed task is retried before it is given up as dead."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    """Attempts per task, the first included. After the last, the task is dead and its documents
    are recorded as failed with the last error."""

    backoff_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    """Wait before the first retry; doubles with each further attempt."""

    max_backoff_seconds: Annotated[float, Field(ge=0.1, le=86_400)] = 300.0
    """Longest wait between two attempts."""


class Limits(KubeModel):
    """Bounds on hostile or accidental input. A document that trips one fails with a reason naming it."""

    max_document_bytes: Annotated[int, Field(ge=1, le=2048 * MiB)] = 50 * MiB
    """Largest document read, in bytes. Larger documents fail without being read whole. Applies to
    each archive entry too."""

    max_archive_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Most entries (files, folders and links) in one zip or tar archive. An archive with more fails whole."""

    max_total_uncompressed_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * MiB)] = 1024 * MiB
    """Most bytes one archive (nested archives included) may expand to. An archive that declares
    more fails whole; a nested archive that does not fit in what is left fails as an entry."""

    max_compression_ratio: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Highest uncompressed-to-compressed size ratio of an archive entry. Only entries larger than
    1 MiB uncompressed are checked, since small files and flat images legitimately compress far better."""

    max_nesting_depth: Annotated[int, Field(ge=0, le=10)] = 2
    """How many levels of archives are opened: 1 opens archives but not archives inside them; 0
    treats every archive as a failed document."""

    max_markup_depth: Annotated[int, Field(ge=16, le=1_000_000)] = 10_000
    """Deepest nesting of elements in an HTML document, counted from its tags before it is parsed. A
    deeper page fails at once: parsers spend time quadratic in the depth (minutes for 200,000 nested
    `<div>`s). Void elements and those whose end tag may be left out (`<p>`, `<li>`, ...) are not counted."""

    max_pdf_pages: Annotated[int, Field(ge=1, le=100_000)] = 2000
    """Most pages in a PDF. A longer PDF fails without its text being extracted."""

    extraction_timeout_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    """Longest the extraction of one document (or one archive entry) may take. Extraction runs in a
    child process that is killed when it overruns, and the document fails."""


class FailurePolicy(KubeModel):
    """When failed documents make the whole job fail. By default they never do."""

    max_failed_documents: Annotated[int | None, Field(ge=0)] = None
    """The job fails once more documents than this have failed in a run."""

    max_failed_percent: Annotated[int | None, Field(ge=0, le=100)] = None
    """The job fails when more than this percentage of a run's documents failed."""


BUILTIN_EMBEDDING_MODEL = "wordllama-l2-supercat"
BUILTIN_EMBEDDING_DIMENSIONS = 256


class EmbeddingEndpoint(KubeModel):
    """An OpenAI-compatible embeddings API (`POST {url}/embeddings`), as served by OpenAI, TEI, vLLM,
    Ollama and LiteLLM."""

    url: HttpUrl
    """Base URL of the API, up to and including `/v1` (e.g. `http://tei.models:8080/v1`); the worker
    posts to `{url}/embeddings`."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s]+$")]
    """Model name sent with each request (e.g. `text-embedding-3-small`, `BAAI/bge-small-en-v1.5`)."""

    dimensions: Annotated[int, Field(ge=1, le=4000)]
    """Length of the vectors the model returns. pgvector's HNSW index holds at most 2,000 dimensions
    (4,000 as halfvec); a response of another length fails the document. Also sent as `dimensions`
    when `sendDimensions` is true."""

    send_dimensions: bool = False
    """Send `dimensions` in the request, for models that can shorten their vectors (OpenAI's
    text-embedding-3 family). Most self-hosted servers reject the field."""

    batch_size: Annotated[int, Field(ge=1, le=2048)] = 64
    """Chunks sent per request."""

    api_key_secret_ref: SecretRef | None = None
    """A Secret with key `apiKey`, sent as `Authorization: Bearer <apiKey>`. Leave unset for servers
    without authentication."""

    timeout_seconds: Annotated[float, Field(ge=1, le=600)] = 60.0
    """Longest one request may take."""

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Attempts per request when the endpoint fails, times out or answers 429; waits honour
    `Retry-After`, else back off exponentially. After the last, the document fails with the reason."""


class Embedding(KubeModel):
    """Vectors for semantic and hybrid search, stored in Postgres with pgvector."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.provider) || self.provider != 'endpoint' || has(self.endpoint)",
                    "message": "provider endpoint needs endpoint",
                }
            ]
        }
    )

    provider: Literal["builtin", "endpoint", "none"] = "builtin"
    """`builtin`: a small static-embedding model shipped with Headrace (wordllama `l2_supercat`,
    256 dimensions), run in the worker with no download and no GPU. `endpoint`: an OpenAI-compatible
    API (see `endpoint`). `none`: keyword search only."""

    endpoint: EmbeddingEndpoint | None = None
    """The embeddings API, for provider `endpoint`."""

    @model_validator(mode="after")
    def _endpoint_given(self) -> "Embedding":
        if self.provider == "endpoint" and self.endpoint is None:
            raise ValueError("provider endpoint needs endpoint")
        return self

    @property
    def enabled(self) -> bool:
        return self.provider != "none"

    @property
    def model_name(self) -> str | None:
        """The name vectors of this job are filed under; jobs with equal names share a vector space."""
        if self.provider == "builtin":
            return BUILTIN_EMBEDDING_MODEL
        if self.provider == "endpoint" and self.endpoint is not None:
            return self.endpoint.model
        return None

    @property
    def dimensions(self) -> int | None:
        if self.provider == "builtin":
            return BUILTIN_EMBEDDING_DIMENSIONS
        if self.provider == "endpoint" and self.endpoint is not None:
            return self.endpoint.dimensions
        return None

    def space_key(self) -> str | None:
        """`model/dimensions`, the vector space this job's chunks are embedded in; None when off."""
        return f"{self.model_name}/{self.dimensions}" if self.enabled else None


class IngestionJobSpec(KubeModel):
    """The desired state of an IngestionJob."""

    source: Source
    """Where the documents come from."""

    chunking: Chunking = Chunking()
    """How text is split into chunks."""

    workers: Workers = Workers()
    """Worker pods and scaling."""

    retries: Retries = Retries()
    """Retry and backoff of failed tasks."""

    limits: Limits = Limits()
    """Bounds on document size and shape."""

    failure_policy: FailurePolicy = FailurePolicy()
    """When document failures fail the job."""

    embedding: Embedding = Embedding()
    """Embeddings for semantic and hybrid search. On by default with the built-in model."""

    text_search_config: Annotated[str, StringConstraints(pattern=r"^[a-z_]+$", max_length=63)] = "english"
    """Postgres text-search configuration for stemming and stop words: any of Postgres's (`english`,
    `german`, `simple`, ...), or Headrace's own `english_unstemmed` (English stop words, words as
    written: ranks identifiers and exact terms better, but `files` no longer finds `file`)."""

    retention: Literal["Retain", "Delete"] = "Retain"
    """What happens to the indexed documents and chunks when the IngestionJob is deleted: `Retain`
    keeps them, unserved, until an IngestionJob of the same name in the same namespace adopts them
    (its first run then skips unchanged documents); `Delete` removes them."""

    suspend: bool = False
    """Pause the job: workers scale to zero and resume where they left off when set back to false."""

    schedule: Annotated[str | None, Field(max_length=128, json_schema_extra={"pattern": CRON_SHAPE})] = None
    """Cron expression (five fields: minute hour day-of-month month day-of-week, UTC; or @hourly, @daily,
    @weekly, @monthly, @yearly) that starts a new incremental run on schedule. An expression that never
    fires (`0 0 30 2 *`) is refused."""

    sync: Literal["incremental", "mirror"] = "incremental"
    """`incremental` adds and updates documents; `mirror` also deletes indexed documents that
    disappeared from the source."""

    active_deadline_seconds: Annotated[int | None, Field(ge=1)] = None
    """Longest a run's worker Job may be active before Kubernetes stops it and the run fails."""

    history_limit: Annotated[int, Field(ge=1, le=1000)] = 10
    """How many runs to keep, with their tasks and events, the current one included. Older runs are
    pruned when a run starts; documents are kept whatever the run that last recorded them."""

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.fullmatch(CRON_SHAPE, value):
            fields = len(value.split())
            raise ValueError(
                f"{value!r} has {fields} fields; a schedule has five (minute hour day-of-month month day-of-week) "
                "or is one of @hourly, @daily, @weekly, @monthly, @yearly"
            )
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        try:
            # croniter looks a few years ahead: a date that never exists (February 30th) is not found.
            croniter(value, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires: no date matches its day-of-month and month") from None
        return value

    def secret_names(self) -> list[str]:
        """Names of the Secrets in the job's namespace that its workers read (see model.contract)."""
        refs = [
            self.source.http.headers_secret_ref if self.source.http else None,
            self.source.s3.credentials_secret_ref if self.source.s3 else None,
            self.embedding.endpoint.api_key_secret_ref if self.embedding.endpoint else None,
        ]
        return sorted({ref.name for ref in refs if ref is not None})

    def content_fingerprint(self) -> str:
        """What, besides a document's bytes, decides its chunks. Equal bytes and an equal
        fingerprint mean a document can be skipped as unchanged."""
        return _digest(
            {
                "pipeline": PIPELINE_VERSION,
                "chunking": self.chunking.to_wire(),
                "textSearchConfig": self.text_search_config,
            }
        )

    def run_fingerprint(self) -> str:
        """What, when changed, starts a new run: the source, everything in the content fingerprint, and
        what decides the vectors (the space, and what of a chunk is embedded)."""
        value: dict[str, object] = {
            "source": self.source.to_wire(),
            "content": self.content_fingerprint(),
            "embedding": self.embedding_key(),
        }
        if self.embedding.enabled:  # absent without embeddings, so such a job's fingerprint stays as it was
            value["embeddingInput"] = EMBEDDING_INPUT
        return _digest(value)

    def embedding_key(self) -> str | None:
        """What decides a document's vectors besides its chunks: the vector space. A document stored
        under another key is re-embedded from its stored chunks, without being fetched or extracted."""
        return self.embedding.space_key()


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
