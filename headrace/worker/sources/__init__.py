"""Sources: where documents come from."""

from pathlib import Path

from headrace.model import Source as SourceSpec
from headrace.worker.sources.base import DocumentRef, Source
from headrace.worker.sources.volume import VolumeFiles


def open_source(spec: SourceSpec, *, volume_root: Path) -> Source:
    """The source the spec names."""
    if spec.volume is not None:
        return VolumeFiles(spec.volume, root=volume_root)
    raise NotImplementedError(f"source {spec.kind!r} is not supported by this worker")


__all__ = ["DocumentRef", "Source", "open_source"]
