"""Archives as hostile input: entries become documents, and every limit trips with its name."""

import io
import zipfile

import pytest

from headrace.model import Chunking, Limits
from headrace.worker.archives import unsafe_name
from headrace.worker.conversion import Message, Request, process
from tests.worker.samples import pdf, tar_file, zip_file

MiB = 1024 * 1024


def outcomes(data: bytes, uri: str = "box.zip", **limits: int) -> dict[str, Message]:
    """Each URI's final message (begin messages dropped)."""
    request = Request(uri=uri, limits=Limits(**limits), chunking=Chunking())  # type: ignore[arg-type]
    return {m["uri"]: m for m in process(request, data) if m["type"] != "begin"}


def reasons(found: dict[str, Message]) -> dict[str, str]:
    return {uri: m["reason"] for uri, m in found.items() if m["type"] == "failed"}


def test_zip_entries_become_documents_under_the_archive_uri() -> None:
    data = zip_file({"a/notes.txt": "Notes on tides.", "report.pdf": pdf(["Page one."]), "folder/": b""})
    found = outcomes(data)
    assert {uri: m["type"] for uri, m in found.items()} == {
        "box.zip!/a/notes.txt": "document",
        "box.zip!/report.pdf": "document",
        "box.zip": "container",
    }
    assert found["box.zip!/report.pdf"]["chunks"][0][2] == 1  # page number survives
    assert found["box.zip"]["entries"] == 2  # files; the folder is not a document


def test_tar_gz_entries_and_links() -> None:
    data = tar_file({"docs/a.md": "# A\n\nalpha"}, links={"docs/passwd": "/etc/passwd"})
    found = outcomes(data, uri="box.tar.gz")
    assert found["box.tar.gz!/docs/a.md"]["type"] == "document"
    assert reasons(found) == {"box.tar.gz!/docs/passwd": "not a regular file (link, device or FIFO)"}


@pytest.mark.parametrize(
    ("mode", "uri"), [("w", "box.tar"), ("w:gz", "box.tgz"), ("w:bz2", "box.tar.bz2"), ("w:xz", "box.tar.xz")]
)
def test_tar_entries_in_every_compression(mode: str, uri: str) -> None:
    data = tar_file({"a.md": "# A\n\nalpha", "b.txt": "beta words"}, mode=mode)
    found = outcomes(data, uri=uri)
    assert {u: m["type"] for u, m in found.items()} == {
        f"{uri}!/a.md": "document",
        f"{uri}!/b.txt": "document",
        uri: "container",
    }

    # A download cut short: inside the first entry's data (a plain tar is mostly zero padding at its end).
    cut = outcomes(data[: 700 if mode == "w" else len(data) * 2 // 3], uri=uri)
    assert cut[uri]["type"] == "failed" and "corrupt" in cut[uri]["reason"]


def test_a_compressed_tar_over_the_total_fails_whole_before_any_entry() -> None:
    bomb = tar_file({f"z{i}": b"\0" * (7 * MiB) for i in range(12)})  # 84 MiB of zeros in about 86 KiB
    found = outcomes(bomb, uri="bomb.tgz", maxTotalUncompressedBytes=64 * MiB, maxDocumentBytes=16 * MiB)
    assert list(found) == ["bomb.tgz"]
    assert "over limits.maxTotalUncompressedBytes" in reasons(found)["bomb.tgz"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../../etc/cron.d/evil", "path traversal"),
        ("a/../../b.txt", "path traversal"),
        ("/etc/passwd", "absolute entry path"),
        ("C:\\Windows\\win.ini", "absolute entry path"),
        ("..\\..\\boot.ini", "path traversal"),
    ],
)
def test_unsafe_names_fail_as_entries(name: str, reason: str) -> None:
    assert reason in (unsafe_name(name) or "")
    found = outcomes(zip_file({name: "payload", "ok.txt": "fine words"}))
    assert reason in reasons(found)[f"box.zip!/{name}"]
    assert found["box.zip!/ok.txt"]["type"] == "document"


def test_a_ratio_bomb_entry_fails_and_its_neighbours_survive() -> None:
    found = outcomes(zip_file({"bomb.txt": b"0" * (20 * MiB), "ok.txt": "fine words"}))
    assert "limits.maxCompressionRatio (100:1)" in reasons(found)["box.zip!/bomb.txt"]
    assert found["box.zip!/ok.txt"]["type"] == "document"


def test_small_entries_may_compress_far_better_than_the_ratio() -> None:
    found = outcomes(zip_file({"flat.txt": b"a" * (MiB - 1)}), max_document_bytes=2 * MiB)
    assert found["box.zip!/flat.txt"]["type"] == "document"


def test_an_archive_over_the_total_fails_whole() -> None:
    data = zip_file({f"part{i}.txt": b"z" * (4 * MiB) for i in range(5)})
    found = outcomes(data, max_total_uncompressed_bytes=16 * MiB)
    assert list(found) == ["box.zip"]
    assert "limits.maxTotalUncompressedBytes" in reasons(found)["box.zip"]


def test_an_archive_with_too_many_entries_fails_whole() -> None:
    data = zip_file({f"e{i}.txt": "x" for i in range(101)}, compression=zipfile.ZIP_STORED)
    found = outcomes(data, max_archive_entries=100)
    assert list(found) == ["box.zip"]
    assert "limits.maxArchiveEntries" in reasons(found)["box.zip"]


def test_tar_size_bomb_is_refused_before_it_is_read() -> None:
    data = tar_file({f"zeros{i}.txt": b"\0" * (4 * MiB) for i in range(4)}, mode="w:gz")
    found = outcomes(data, uri="bomb.tgz", max_total_uncompressed_bytes=8 * MiB)
    assert "limits.maxTotalUncompressedBytes" in reasons(found)["bomb.tgz"]


def test_nesting_is_opened_to_the_limit_and_no_further() -> None:
    inner = zip_file({"deep.txt": "deepest words"})
    middle = zip_file({"inner.zip": inner, "mid.txt": "middle words"})
    outer = zip_file({"middle.zip": middle})
    found = outcomes(outer, max_nesting_depth=2)
    assert found["box.zip!/middle.zip!/mid.txt"]["type"] == "document"
    assert "limits.maxNestingDepth (2)" in reasons(found)["box.zip!/middle.zip!/inner.zip"]
    assert "limits.maxNestingDepth is 0" in reasons(outcomes(outer, max_nesting_depth=0))["box.zip"]


def test_known_entries_are_reported_unchanged_without_extraction() -> None:
    data = zip_file({"same.txt": "same words", "new.txt": "new words"})
    first = outcomes(data)
    request = Request(
        uri="box.zip",
        limits=Limits(),
        chunking=Chunking(),
        known={"box.zip!/same.txt": first["box.zip!/same.txt"]["hash"]},
    )
    types = {m["uri"]: m["type"] for m in process(request, data) if m["type"] != "begin"}
    assert types == {"box.zip!/same.txt": "unchanged", "box.zip!/new.txt": "document", "box.zip": "container"}


@pytest.mark.parametrize(
    "data",
    [b"PK\x03\x04" + b"\0" * 100, b"\x1f\x8b\x08\x00" + b"junk" * 10, zip_file({"a.txt": "x"})[:-30]],
    ids=["zip-header-only", "gzip-junk", "zip-without-directory"],
)
def test_corrupt_archives_fail_with_a_reason(data: bytes) -> None:
    found = outcomes(data, uri="broken")
    assert "corrupt" in reasons(found)["broken"]


def test_encrypted_zip_entries_fail_alone() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("plain.txt", "open words")
        info = zipfile.ZipInfo("locked.txt")
        info.flag_bits |= 0x1  # marks the entry encrypted, as a password-protected zip does
        archive.writestr(info, b"\x00" * 40)
    found = outcomes(out.getvalue())
    assert found["box.zip!/plain.txt"]["type"] == "document"
    assert "box.zip!/locked.txt" in reasons(found)
