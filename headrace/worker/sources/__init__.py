"""Sources: where documents come from."""

from pathlib import Path

from headrace.model import Source as SourceSpec
from headrace.model.contract import WORKER_SECRETS_DIR
from headrace.worker.sources.base import DocumentRef, Fetched, Source
from headrace.worker.sources.volume import VolumeFiles


def open_source(spec: SourceSpec, *, volume_root: Path, secrets_dir: Path = Path(WORKER_SECRETS_DIR)) -> Source:
    """The source the spec names. Secrets it references are read from `secrets_dir`."""
    if spec.volume is not None:
        return VolumeFiles(spec.volume, root=volume_root)
    if spec.http is not None:
        from headrace.worker.sources.http import WebPages

        return WebPages(spec.http, secrets_dir=secrets_dir)
    if spec.s3 is not None:
        from headrace.worker.sources.s3 import BucketObjects

        return BucketObjects(spec.s3, secrets_dir=secrets_dir)
    raise NotImplementedError(f"source {spec.kind!r} is not supported by this worker")


__all__ = ["DocumentRef", "Fetched", "Source", "open_source"]
