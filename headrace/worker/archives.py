"""Zip and tar archives, opened as hostile input: counted, sized and name-checked before any entry is read.

An archive is checked whole first (entry count, declared total size), then its entries are streamed
one at a time, each read with a cap, so memory never holds more than one entry. Python's zipfile
never inflates past an entry's declared size and checks its CRC, so declared sizes are binding.
"""

import bz2
import gzip
import io
import lzma
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from headrace.model import Limits
from headrace.worker.errors import DocumentError

MiB = 1024 * 1024
# Below this size an entry's compression ratio is not checked: small files and flat images
# legitimately reach ratios of 1000:1.
RATIO_CHECK_FLOOR = 1 * MiB
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Entry:
    """One archive member: its bytes, or why it cannot be read."""

    name: str
    data: bytes | None = None
    error: str | None = None


@dataclass
class Budget:
    """Uncompressed bytes an archive and the archives nested in it may still expand to."""

    remaining: int


def unsafe_name(name: str) -> str | None:
    """Why an entry name must not be used (absolute, drive letter, `..` segment, NUL), or None."""
    if "\x00" in name:
        return "NUL byte in entry name"
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        return "absolute entry path"
    if ".." in normal.split("/"):
        return "path traversal ('..') in entry name"
    if not normal.strip("/"):
        return "empty entry name"
    return None


def _too_many(count: int, limits: Limits) -> None:
    if count > limits.max_archive_entries:
        raise DocumentError(
            f"archive has more than {limits.max_archive_entries} entries, over limits.maxArchiveEntries"
        )


def _too_big(total: int, budget: int, limits: Limits) -> None:
    if total > budget:
        raise DocumentError(
            f"archive expands to {total} bytes, over limits.maxTotalUncompressedBytes "
            f"({limits.max_total_uncompressed_bytes}, {budget} left for this archive)"
        )


def _ratio_error(size: int, compressed: int, limits: Limits) -> str | None:
    if size > RATIO_CHECK_FLOOR and size > limits.max_compression_ratio * max(compressed, 1):
        ratio = size // max(compressed, 1)
        return f"compression ratio {ratio}:1, over limits.maxCompressionRatio ({limits.max_compression_ratio}:1)"
    return None


def check_zip(data: bytes, limits: Limits, *, budget: int) -> int:
    """Refuse a zip whose entries or declared sizes break the limits; return its declared total."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise DocumentError(f"corrupt zip: {exc}") from None
    _too_many(len(infos), limits)
    total = sum(info.file_size for info in infos)
    _too_big(total, budget, limits)
    for info in infos:
        reason = _ratio_error(info.file_size, info.compress_size, limits)
        if reason:
            raise DocumentError(f"{info.filename}: {reason}")
    return total


def zip_entries(data: bytes, limits: Limits, budget: Budget) -> Iterator[Entry]:
    """The members of a zip, after the whole archive passed the limits."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise DocumentError(f"corrupt zip: {exc}") from None
    with archive:
        _too_many(len(infos), limits)
        total = sum(info.file_size for info in infos)
        _too_big(total, budget.remaining, limits)
        budget.remaining -= total
        for info in infos:
            if info.is_dir():
                continue
            reason = unsafe_name(info.filename) or _ratio_error(info.file_size, info.compress_size, limits)
            if reason is None and info.file_size > limits.max_document_bytes:
                reason = f"entry is {info.file_size} bytes, over limits.maxDocumentBytes ({limits.max_document_bytes})"
            if reason is not None:
                yield Entry(info.filename, error=reason)
                continue
            yield _read_zip_member(archive, info, limits)


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> Entry:
    try:
        with archive.open(info) as member:
            body = member.read(limits.max_document_bytes + 1)
    except RuntimeError as exc:  # zipfile's way of saying "encrypted"
        return Entry(info.filename, error=f"cannot read entry: {exc}")
    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as exc:
        return Entry(info.filename, error=f"corrupt entry: {type(exc).__name__}: {exc}")
    if len(body) > limits.max_document_bytes:
        return Entry(info.filename, error=f"entry is over limits.maxDocumentBytes ({limits.max_document_bytes})")
    return Entry(info.filename, data=body)


def _decompressing(data: bytes) -> io.BufferedIOBase:
    """`data` as a file that decompresses as it is read (gzip, bzip2, xz by their magic), or as is."""
    raw = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if data.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


_CORRUPT = (tarfile.TarError, OSError, EOFError, lzma.LZMAError)


def _open_tar(data: bytes) -> tarfile.TarFile:
    """A tar read as a stream, decompressed by the compression module's own file object. tarfile's
    "r|*" decompresses each read whole into one buffer and slices it, which is quadratic in what a
    few KiB expand to: 2.8 CPU s to walk the headers of a 86 KiB gzip bomb of 70 MiB, against 0.2 s."""
    try:
        return tarfile.open(fileobj=_decompressing(data), mode="r|")
    except _CORRUPT as exc:
        raise DocumentError(f"corrupt or unsupported tar archive: {exc}") from None


def tar_entries(data: bytes, limits: Limits, budget: Budget) -> Iterator[Entry]:
    """The members of a (possibly gzip, bzip2 or xz compressed) tar, streamed twice: once to count
    and size the headers, once to read, so the archive fails whole before any entry is used."""
    count, total = 0, 0
    try:
        with _open_tar(data) as archive:
            for member in archive:
                count += 1
                total += max(member.size, 0)
                _too_many(count, limits)
                _too_big(total, budget.remaining, limits)
    except (*_CORRUPT, zipfile.BadZipFile) as exc:
        raise DocumentError(f"corrupt tar archive: {exc}") from None
    compressed = not data.startswith(b"ustar", 257)
    if compressed and (reason := _ratio_error(total, len(data), limits)):
        raise DocumentError(reason)
    budget.remaining -= total
    try:
        with _open_tar(data) as archive:
            for member in archive:
                if member.isdir():
                    continue
                reason = unsafe_name(member.name)
                if reason is None and not member.isreg():
                    reason = "not a regular file (link, device or FIFO)"
                if reason is None and member.size > limits.max_document_bytes:
                    reason = f"entry is {member.size} bytes, over limits.maxDocumentBytes ({limits.max_document_bytes})"
                if reason is not None:
                    yield Entry(member.name, error=reason)
                    continue
                handle = archive.extractfile(member)
                yield Entry(member.name, data=handle.read() if handle else b"")
    except _CORRUPT as exc:
        raise DocumentError(f"corrupt tar archive: {exc}") from None
