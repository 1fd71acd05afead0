"""Searchable metadata: what each format and source knows, and the detected language, filter search."""

import os
import uuid
from pathlib import Path

import pytest

from headrace.store import jobs, search
from headrace.store.db import Pool
from headrace.worker.metadata import detect_language, http_date, language_tag, pdf_date
from tests.conftest import volume_spec
from tests.sources.helpers import run_once
from tests.worker.samples import docx_file, pdf

pytestmark = pytest.mark.postgres

ENGLISH = "The harbour master counted the fishing boats that came back before the storm arrived."
GERMAN = "Der Hafenmeister zählte die Fischerboote, die vor dem Sturm zurückkehrten, und schrieb alles auf."
HTML = (
    '<!doctype html><html lang="fr-CA"><head><title>Le port</title>'
    '<meta name="description" content="Un récit du port"><meta name="author" content="Anne">'
    "</head><body><p>Le capitaine du port a compté les bateaux de pêche avant la tempête.</p></body></html>"
)


def lay_out(folder: Path) -> None:
    folder.mkdir()
    (folder / "english.txt").write_text(ENGLISH)
    (folder / "german.md").write_text("# Hafen\n\n" + GERMAN)
    (folder / "page.html").write_text(HTML)
    (folder / "ledger.pdf").write_bytes(pdf([ENGLISH], title="Ledger", author="Grace Hopper"))
    (folder / "report.docx").write_bytes(docx_file("Report", [ENGLISH], author="Ada Lovelace"))
    os.utime(folder / "english.txt", (1_700_000_000, 1_700_000_000))


async def test_formats_sources_and_language_become_filterable_metadata(pool: Pool, tmp_path: Path) -> None:
    lay_out(tmp_path / "docs")
    spec = volume_spec(tmp_path / "docs", embedding={"provider": "none"})
    job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="default", name="meta", generation=1, spec=spec)
    await run_once(pool, job, secrets_dir=tmp_path)
    rows = await pool.fetch("SELECT uri, metadata FROM headrace.documents WHERE job_uid = $1", job.uid)
    meta = {r["uri"]: r["metadata"] for r in rows}
    assert meta["english.txt"] == {
        "title": ENGLISH,
        "contentType": "text/plain",
        "language": "en",
        "size": len(ENGLISH),
        "modified": "2023-11-14T22:13:20Z",
    }
    assert meta["german.md"]["language"] == "de" and meta["german.md"]["contentType"] == "text/markdown"
    assert meta["page.html"] | {"modified": None} == {
        "title": "Le port",
        "contentType": "text/html",
        "language": "fr",  # declared by <html lang>, which wins over detection
        "description": "Un récit du port",
        "author": "Anne",
        "size": len(HTML.encode()),
        "modified": None,
    }
    assert meta["ledger.pdf"]["author"] == "Grace Hopper" and meta["ledger.pdf"]["keywords"] == "ledger, audit"
    assert meta["ledger.pdf"]["contentType"] == "application/pdf" and meta["ledger.pdf"]["pages"] == 1
    assert meta["report.docx"]["author"] == "Ada Lovelace" and meta["report.docx"]["subject"] == "quarterly figures"

    async def uris(**metadata: object) -> set[str]:
        page = await search.search(
            pool, "port or harbour or hafenmeister or report", where=search.SearchFilter(metadata=metadata)
        )
        return {h.uri for h in page.hits}

    assert await uris(language="de") == {"german.md"}
    assert await uris(language="fr", author="Anne") == {"page.html"}
    assert await uris(contentType="application/pdf") == {"ledger.pdf"}
    assert await uris(author="Ada Lovelace") == {"report.docx"}


def test_parsers_of_dates_and_languages() -> None:
    assert pdf_date("D:20240131120000+01'00'") == "2024-01-31T12:00:00Z"
    assert pdf_date("D:2024") == "2024-01-01T00:00:00Z" and pdf_date("yesterday") is None
    assert http_date("Wed, 21 Oct 2015 07:28:00 GMT") == "2015-10-21T07:28:00Z" and http_date("soon") is None
    assert language_tag("en-US, fr;q=0.8") == "en" and language_tag("*") is None
    assert detect_language(GERMAN) == "de" and detect_language("too short") is None
