"""Documents on a mounted filesystem: regular files under a root, never leaving it.

Every path is opened one component at a time from a directory descriptor, each with `O_NOFOLLOW`,
as `openat2(RESOLVE_BENEATH)` would (Python has no binding for it). A symlink is never followed by
the kernel: its target is read and walked the same way, and `..` can climb no higher than the
source folder. So whatever the tenant puts on the volume (symlinks to `/proc/self` or `/etc`, at any
depth, swapped in between listing and reading), every file opened is under `spec.source.volume.path`
inside the mount, and that is checked on the descriptor that is read, not on a path.
"""

import asyncio
import errno
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
MAX_SYMLINKS = 40  # as the kernel's own limit on one lookup

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: a FIFO swapped in after listing must not hang the worker.
_FILE = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | _CLOEXEC


class OutsideRoot(DocumentError):
    """A path or symlink leads outside the source folder."""


def _components(path: str) -> list[str]:
    """The names along a path; a leading `/` means the root the path is opened beneath."""
    return [part for part in path.split("/") if part not in ("", ".")]


def open_beneath(root_fd: int, path: str, *, directory: bool) -> int:
    """A new descriptor for `path` under the directory `root_fd`, which the walk never leaves.

    Raises OutsideRoot when `path` or a symlink on the way climbs above the root or names an absolute
    target, DocumentError when something on the way is missing or not a folder.
    """
    stack = [os.dup(root_fd)]  # the folders walked so far; `..` pops, never the root itself
    pending = _components(path)
    links = 0
    try:
        while pending:
            part = pending.pop(0)
            if part == "..":
                if len(stack) == 1:
                    raise OutsideRoot(f"{path} leads outside the source folder")
                os.close(stack.pop())
                continue
            flags = _DIRECTORY if (pending or directory) else _FILE
            try:
                fd = os.open(part, flags, dir_fd=stack[-1])
            except OSError as exc:
                # O_NOFOLLOW met a symlink (ELOOP; ENOTDIR along with O_DIRECTORY): walk its target.
                target = _link_target(part, stack[-1]) if exc.errno in (errno.ELOOP, errno.ENOTDIR) else None
                if target is None:
                    raise _missing(path, exc) from None
                links += 1
                if target.startswith("/"):
                    raise OutsideRoot(f"{path}: symlink {part!r} points to an absolute path") from None
                if links > MAX_SYMLINKS:
                    raise DocumentError(f"{path}: more than {MAX_SYMLINKS} symlinks") from None
                pending = _components(target) + pending
                continue
            stack.append(fd)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def _link_target(name: str, dir_fd: int) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:  # not a symlink after all (EINVAL), or gone
        return None


def _missing(path: str, exc: OSError) -> DocumentError:
    if exc.errno == errno.ENOENT:
        return DocumentError(f"{path} does not exist")
    if exc.errno == errno.ENOTDIR:
        return DocumentError(f"{path}: a part of it is not a folder")
    return DocumentError(f"cannot open {path}: {exc.strerror}")


class VolumeFiles:
    """The regular files under `root / spec.path` that the include/exclude globs select.

    `root` (the mount point) is trusted; `spec.path`, even absolute, is taken beneath it.
    """

    def __init__(self, spec: VolumeSource, *, root: Path) -> None:
        self.spec = spec
        self.mount = root
        self._folder: int | None = None

    def _folder_fd(self) -> int:
        if self._folder is None:
            mount = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            try:
                self._folder = open_beneath(mount, self.spec.path, directory=True)
            except DocumentError as exc:
                # Named as the user wrote it and where it was looked for: the mount is this worker's own.
                where = self.mount / self.spec.path.lstrip("/")
                raise DocumentError(f"source.volume.path: {exc} (looked for at {where})") from None
            finally:
                os.close(mount)
        return self._folder

    def _walk(self) -> Iterator[DocumentRef]:
        root = self._folder_fd()
        stack = [""]
        while stack:
            relative_folder = stack.pop()
            try:
                folder = open_beneath(root, relative_folder, directory=True) if relative_folder else os.dup(root)
            except DocumentError:
                continue  # swapped or removed since it was listed
            subfolders = []
            # Open while its entries are looked at: a DirEntry of an fd listing stats through that fd.
            try:
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError:
                    entries = []  # unreadable folder: nothing in it can be listed
                for entry in entries:
                    relative = f"{relative_folder}/{entry.name}" if relative_folder else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(relative)
                        continue
                    info = self._regular_file(root, relative, entry)
                    if info is not None and matches(relative, self.spec.include, self.spec.exclude):
                        yield DocumentRef(uri=relative, size=info.st_size, version=str(info.st_mtime_ns))
            finally:
                os.close(folder)
            stack.extend(reversed(subfolders))

    def _regular_file(self, root: int, relative: str, entry: os.DirEntry[str]) -> os.stat_result | None:
        """The file's stat when it is (or a symlink leads, within the folder, to) a regular file; else None."""
        try:
            if not entry.is_symlink():
                info = entry.stat(follow_symlinks=False)
            else:
                fd = open_beneath(root, relative, directory=False)
                try:
                    info = os.fstat(fd)
                finally:
                    os.close(fd)
        except (OSError, DocumentError):
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
        fd = open_beneath(self._folder_fd(), ref.uri, directory=False)
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
        folder, self._folder = self._folder, None
        if folder is not None:
            os.close(folder)
