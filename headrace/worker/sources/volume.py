"""Documents on a mounted filesystem: regular files under a root, never leaving it."""

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

from headrace.model import VolumeSource
from headrace.worker.errors import DocumentError
from headrace.worker.metadata import iso
from headrace.worker.sources.base import DocumentRef, Fetched
from headrace.worker.sources.globs import matches

PAGE_SIZE = 1000


class VolumeFiles:
    """The regular files under `root / spec.path` that the include/exclude globs select."""

    def __init__(self, spec: VolumeSource, *, root: Path) -> None:
        self.spec = spec
        self.root = (root / spec.path).resolve()

    def _walk(self) -> Iterator[DocumentRef]:
        if not self.root.is_dir():
            raise DocumentError(f"source.volume.path: {self.root} is not a directory")
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue  # unreadable folder: nothing in it can be listed
            subfolders = []
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(path)
                    continue
                info = self._regular_file_inside_root(path)
                if info is None:
                    continue
                relative = path.relative_to(self.root).as_posix()
                if matches(relative, self.spec.include, self.spec.exclude):
                    yield DocumentRef(uri=relative, size=info.st_size, version=str(info.st_mtime_ns))
            stack.extend(reversed(subfolders))

    def _regular_file_inside_root(self, path: Path) -> os.stat_result | None:
        """The file's stat when it is (or links to) a regular file inside the root; else None."""
        try:
            if path.is_symlink():
                target = path.resolve(strict=True)
                if not target.is_relative_to(self.root):
                    return None
                path = target
            info = path.stat()
        except (OSError, RuntimeError):
            return None
        return info if stat.S_ISREG(info.st_mode) else None

    async def pages(self) -> AsyncIterator[list[DocumentRef]]:
        walker = self._walk()
        while True:
            page = await asyncio.to_thread(lambda: [ref for _, ref in zip(range(PAGE_SIZE), walker, strict=False)])
            if not page:
                return
            yield page

    async def fetch(self, ref: DocumentRef, *, max_bytes: int, known_version: str | None = None) -> Fetched:
        data, modified = await asyncio.to_thread(self._read, ref, max_bytes)
        return Fetched(data, metadata={"modified": iso(datetime.fromtimestamp(modified, UTC))})

    def _read(self, ref: DocumentRef, max_bytes: int) -> tuple[bytes, float]:
        """The file's bytes and modification time."""
        path = (self.root / ref.uri).resolve()
        if not path.is_relative_to(self.root):
            raise DocumentError(f"{ref.uri} resolves outside the source folder")
        try:
            # O_NONBLOCK: a FIFO swapped in after listing must not hang the worker.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise DocumentError(f"{ref.uri} no longer exists") from None
        except OSError as exc:
            raise DocumentError(f"cannot open {ref.uri}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DocumentError(f"{ref.uri} is not a regular file")
            if info.st_size > max_bytes:
                raise DocumentError(f"document is {info.st_size} bytes, over limits.maxDocumentBytes ({max_bytes})")
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise DocumentError(f"document is over limits.maxDocumentBytes ({max_bytes})")
        return data, info.st_mtime

    async def close(self) -> None:
        pass
