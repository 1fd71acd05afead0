"""A generated corpus of 200+ hostile files through the real `headrace worker`, under a memory rlimit.

Every file must end ingested or failed with a reason, the worker must exit 0, and the limits that
trip must be named in the reasons.
"""

import asyncio
import json
import random
import resource
import sys
import zipfile
from pathlib import Path

import pytest

from headrace.store import jobs, runs
from headrace.store.db import Pool
from tests.conftest import JobFactory, volume_spec
from tests.worker.samples import docx_file, pdf, tar_file, zip_file

MiB = 1024 * 1024
MEMORY_LIMIT = 512 * MiB
pytestmark = pytest.mark.slow


ANY = "either ingested or failed with a reason"


def build_corpus(root: Path) -> dict[str, str | None]:
    """Write the corpus; return each file's expected fate: None to be ingested, ANY, else a fragment
    of the reason it fails with."""
    rng = random.Random(20261123)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, fate: str | None) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[name] = fate

    words = ["tide", "harbour", "lighthouse", "keeper", "fog", "current", "moon", "anchor", "quay", "beacon"]

    def prose(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n)) + "."

    for i in range(50):
        put(f"good/text-{i}.txt", prose(200).encode(), None)
    for i in range(15):
        put(f"good/note-{i}.md", f"# Note {i}\n\n{prose(80)}\n\n## More\n\n{prose(80)}".encode(), None)
    for i in range(15):
        put(f"good/page-{i}.html", f"<html><body><main><p>{prose(100)}</p></main></body></html>".encode(), None)
    for i in range(5):
        put(f"good/data-{i}.json", json.dumps({"port": prose(5), "berths": [prose(3)] * 3}).encode(), None)
        put(f"good/table-{i}.csv", f"port,note\nBrest,{prose(5)}\nCork,{prose(5)}\n".encode(), None)
    for i in range(20):
        put(f"pdf/good-{i}.pdf", pdf([prose(60), prose(60)]), None)
    for i in range(10):
        whole = pdf([prose(60)])
        put(f"pdf/truncated-{i}.pdf", whole[: rng.randrange(10, len(whole) // 2)], "PDF")
    for i in range(10):
        put(f"pdf/encrypted-{i}.pdf", pdf([prose(40)], password=f"pw{i}"), "encrypted PDF")
    for i in range(5):
        put(f"docx/good-{i}.docx", docx_file(f"Report {i}", [prose(50), prose(50)]), None)
        put(f"docx/truncated-{i}.docx", docx_file("Cut", [prose(50)])[:2000], "corrupt")
    for i in range(30):
        suffix = [".txt", ".md", ".html", ".json", ".csv"][i % 5]
        put(f"junk/random-{i}{suffix}", rng.randbytes(rng.randrange(100, 50_000)), "")
    for i in range(5):
        put(f"encoding/latin1-{i}.txt", f"Phare de Brest, côte, été {i}. {prose(30)}".encode("latin-1"), None)
        put(f"encoding/utf16-{i}.txt", f"Wide text {i} {prose(30)}".encode("utf-16-le"), ANY)
        put(f"encoding/broken-utf8-{i}.txt", prose(30).encode() + b"\xc3\x28\xa0\xa1" * 200, ANY)
    for i in range(9):
        put(f"html/unclosed-{i}.html", b"<html><body>" + b"<div><p><b>" * (500 * (i + 1)) + prose(20).encode(), None)
    # Unclosed <p> inside unclosed <div>s makes every HTML parser walk its stack of open elements
    # once per tag: quadratic, minutes of CPU. A scan of the tags refuses them before any parser runs.
    put("html/unclosed-quadratic.html", b"<html><body>" + b"<div><p>" * 200_000, "limits.maxMarkupDepth")
    put("html/200k-divs.html", b"<html><body>" + b"<div>" * 200_000, "limits.maxMarkupDepth")
    put("json/deep.json", b"[" * 100_000 + b"]" * 100_000, "")
    put("json/invalid.json", b'{"a": [1, 2', "invalid JSON")
    put("empty.txt", b"", "empty document")

    huge = root / "huge.bin.txt"
    with huge.open("wb") as handle:  # sparse: far over the limit, yet no disk used
        handle.truncate(300 * MiB)
    expected["huge.bin.txt"] = "limits.maxDocumentBytes"

    put("archives/ok.zip", zip_file({"a.txt": prose(50), "sub/b.md": "# B\n\n" + prose(50)}), None)
    put("archives/ok.tar.gz", tar_file({"c.txt": prose(50)}), None)
    put("archives/ratio-bomb.zip", zip_file({"zeros.txt": b"0" * (9 * MiB), "fine.txt": prose(20)}), None)
    put("archives/size-bomb.zip", zip_file({f"z{i}.txt": b"\0" * (7 * MiB) for i in range(12)}), "limits.maxTotal")
    put("archives/size-bomb.tgz", tar_file({f"z{i}": b"\0" * (7 * MiB) for i in range(12)}), "limits.maxTotal")
    many = zip_file({f"e/{i}.txt": b"x" for i in range(100_000)}, compression=zipfile.ZIP_STORED)
    put("archives/100k-entries.zip", many, "limits.maxArchiveEntries")
    put("archives/traversal.zip", zip_file({"../../etc/passwd": "root", "/abs.txt": "x", "ok.txt": prose(9)}), None)
    put("archives/links.tar", tar_file({"real.txt": prose(10)}, mode="w", links={"l": "/etc/shadow"}), None)
    nested = zip_file({"l3.txt": prose(10)})
    for level in range(3):
        nested = zip_file({f"level{level}.zip": nested})
    put("archives/nested.zip", nested, None)
    return expected


ENTRY_FATES = {
    "archives/ratio-bomb.zip!/zeros.txt": "limits.maxCompressionRatio",
    "archives/ratio-bomb.zip!/fine.txt": None,
    "archives/traversal.zip!/../../etc/passwd": "path traversal",
    "archives/traversal.zip!//abs.txt": "absolute entry path",
    "archives/traversal.zip!/ok.txt": None,
    "archives/links.tar!/l": "not a regular file",
    "archives/links.tar!/real.txt": None,
    "archives/ok.zip!/a.txt": None,
    "archives/ok.zip!/sub/b.md": None,
    "archives/ok.tar.gz!/c.txt": None,
    "archives/nested.zip!/level2.zip!/level1.zip": "limits.maxNestingDepth",
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


async def test_hostile_corpus_ends_ingested_or_failed_with_reasons(
    pool: Pool, make_job: JobFactory, dsn: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    expected = await asyncio.to_thread(build_corpus, corpus)
    assert len(expected) >= 200
    limits = {"maxDocumentBytes": 16 * MiB, "maxTotalUncompressedBytes": 64 * MiB, "extractionTimeoutSeconds": 10}
    job = await make_job(volume_spec(corpus, limits=limits, workers={"batchSize": 25}))
    run = await runs.start_run(pool, job, reason="hostile corpus")

    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headrace",
        "worker",
        "--job",
        str(job.uid),
        "--database-url",
        dsn,
        "--volume-root",
        "/",
        preexec_fn=_limit_memory,
    )
    assert await worker.wait() == 0

    rows = await pool.fetch("SELECT uri, state, error FROM headrace.documents WHERE job_uid = $1", job.uid)
    docs = {r["uri"]: r for r in rows}
    assert set(expected) <= set(docs)
    assert all(r["state"] == "ingested" or r["error"] for r in rows), "a failed document lacks its reason"
    for uri, fate in {**expected, **ENTRY_FATES}.items():
        row = docs[uri]
        if fate is None:
            assert row["state"] == "ingested", (uri, row["error"])
        elif fate != ANY:
            assert row["state"] == "failed" and fate in row["error"], (uri, row["error"])
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished and state.error is None
    assert state.progress.pending == 0
