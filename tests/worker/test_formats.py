"""PDF, DOCX, JSON and CSV extraction, and format detection by content rather than by name."""

import json

import pytest

from headrace.model import Chunking, Limits
from headrace.worker.chunker import chunk_sections
from headrace.worker.errors import DocumentError
from headrace.worker.extract import extract, sniff_format
from tests.worker.samples import docx_file, pdf, zip_file

PAGES = ["Tide tables for the northern harbour.", "Spring tides follow the full moon.", "Neap tides are gentler."]


def test_pdf_text_keeps_page_numbers_on_chunks() -> None:
    result = extract(pdf(PAGES, title="Tide Tables"), name="tides.pdf")
    assert result.format == "pdf"
    assert result.title == "Tide Tables"
    assert [(s.page, s.text.strip()) for s in result.sections] == [(1, PAGES[0]), (2, PAGES[1]), (3, PAGES[2])]
    long_pages = [f"Page {n} is about {topic}. " * 8 for n, topic in enumerate(["tides", "moons", "winds"], 1)]
    sections = extract(pdf(long_pages), name="long.pdf").sections
    chunks = chunk_sections(sections, Chunking(target_size=300, overlap=0))
    assert [(c.page, c.text.split(" is about")[0]) for c in chunks] == [(1, "Page 1"), (2, "Page 2"), (3, "Page 3")]


def test_pdf_is_found_by_content_whatever_its_name() -> None:
    assert extract(pdf(PAGES), name="download.txt").format == "pdf"


def test_encrypted_pdf_fails_with_a_reason() -> None:
    with pytest.raises(DocumentError, match="encrypted PDF"):
        extract(pdf(PAGES, password="secret"), name="locked.pdf")


@pytest.mark.parametrize("cut", [20, 200, 600])
def test_truncated_pdf_fails_with_a_reason(cut: int) -> None:
    with pytest.raises(DocumentError, match="PDF"):
        extract(pdf(PAGES)[:cut], name="cut.pdf")


def test_pdf_over_the_page_limit_fails_naming_it() -> None:
    with pytest.raises(DocumentError, match=r"3 pages, over limits.maxPdfPages \(2\)"):
        extract(pdf(PAGES), name="long.pdf", limits=Limits(max_pdf_pages=2))


def test_docx_paragraphs_and_tables_in_order() -> None:
    data = docx_file("Harbour rules", ["Moor at the north quay.", "No fires."], [["Berth", "Length"], ["A", "40 m"]])
    result = extract(data, name="rules.bin")
    assert result.format == "docx"
    assert result.title == "Harbour rules"
    text = result.sections[0].text
    assert text.index("Moor at the north quay.") < text.index("No fires.") < text.index("A | 40 m")


def test_docx_with_a_bomb_inside_fails_naming_the_limit() -> None:
    bomb = zip_file({"word/document.xml": b"<" + b" " * (8 * 1024 * 1024), "[Content_Types].xml": "<x/>"})
    assert sniff_format(bomb, "b.docx") == "docx"
    with pytest.raises(DocumentError, match=r"limits\.maxCompressionRatio"):
        extract(bomb, name="b.docx")


def test_json_values_are_searchable_with_their_keys() -> None:
    data = json.dumps({"harbour": {"name": "Brest", "berths": [{"id": "A", "depth": 12}]}}).encode()
    text = extract(data, name="harbour.json").sections[0].text
    assert "harbour.name: Brest" in text
    assert "harbour.berths[0].depth: 12" in text


def test_invalid_json_fails_with_a_reason() -> None:
    with pytest.raises(DocumentError, match="invalid JSON"):
        extract(b'{"open": ', name="broken.json")


def test_csv_rows_become_labelled_paragraphs() -> None:
    text = extract(b"port,country\nBrest,France\nCork,Ireland\n", name="ports.csv").sections[0].text
    assert text.split("\n\n") == ["port: Brest\ncountry: France", "port: Cork\ncountry: Ireland"]


@pytest.mark.parametrize(
    ("data", "name", "media_type", "kind"),
    [
        (b"<!doctype html><p>x</p>", "page", None, "html"),
        (b"<p>x</p>", "page", "text/html; charset=utf-8", "html"),
        (b'{"a": 1}', "api/item", "application/json", "json"),
        (b"# Title", "notes", "text/markdown", "markdown"),
        (b"PK\x03\x04rest", "report.txt", None, "zip"),
        (b"\x1f\x8b\x08rest", "notes.md", None, "gzip"),
        (b"\x89PNG\r\n\x1a\nrest", "image.txt", None, "png image"),
        (b"plain words", "readme", None, "text"),
    ],
)
def test_format_is_sniffed_from_content_first(data: bytes, name: str, media_type: str | None, kind: str) -> None:
    assert sniff_format(data, name, media_type) == kind
