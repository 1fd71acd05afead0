"""A whole IngestionJob object, as `kubectl apply` sends it, and loading it from YAML."""

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, StringConstraints, ValidationError

from headrace.model.base import KubeModel, field_errors
from headrace.model.spec import IngestionJobSpec
from headrace.model.status import IngestionJobStatus

GROUP = "headrace.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "IngestionJob"
PLURAL = "ingestionjobs"
SINGULAR = "ingestionjob"
SHORT_NAMES = ("ij",)
CATEGORIES = ("headrace",)

DNS1123Label = Annotated[str, StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class ObjectMeta(KubeModel):
    """The metadata we read. Everything else the API server adds is kept but not interpreted."""

    model_config = ConfigDict(extra="allow")

    name: DNS1123Label
    namespace: DNS1123Label = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = {}


class IngestionJob(KubeModel):
    """An IngestionJob: a source of documents to extract, chunk and index in Postgres."""

    api_version: Literal["headrace.io/v1alpha1"] = Field("headrace.io/v1alpha1", alias="apiVersion")
    kind: Literal["IngestionJob"] = "IngestionJob"
    metadata: ObjectMeta
    spec: IngestionJobSpec
    status: IngestionJobStatus | None = None


class InvalidManifest(ValueError):
    """A manifest that does not describe a valid IngestionJob. The message names every bad field."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{origin}: invalid IngestionJob:\n  " + "\n  ".join(problems))


def parse_manifest(document: Any, *, origin: str = "manifest") -> IngestionJob:
    """Validate one decoded manifest, raising InvalidManifest that names each bad field."""
    if not isinstance(document, dict):
        raise InvalidManifest(origin, ["<root>: expected a mapping with apiVersion, kind, metadata, spec"])
    try:
        return IngestionJob.model_validate(document)
    except ValidationError as exc:
        raise InvalidManifest(origin, field_errors(exc)) from None


def load_manifest(path: Path) -> IngestionJob:
    """Read the single IngestionJob in a YAML file."""
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except yaml.YAMLError as exc:
        raise InvalidManifest(str(path), [f"<root>: not valid YAML: {exc}"]) from None
    jobs = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]
    if len(jobs) != 1:
        raise InvalidManifest(str(path), [f"<root>: expected one IngestionJob, found {len(jobs)}"])
    return parse_manifest(jobs[0], origin=str(path))
