"""Builders of real documents for tests: PDFs (fpdf2), DOCX (python-docx), zip and tar archives."""

import io
import tarfile
import zipfile

import docx
from fpdf import FPDF


def pdf(pages: list[str], *, title: str = "", password: str | None = None, author: str = "") -> bytes:
    document = FPDF()
    document.set_font("helvetica", size=12)
    if title:
        document.set_title(title)
    if author:
        document.set_author(author)
        document.set_keywords("ledger, audit")
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    if password is not None:
        document.set_encryption(owner_password="owner-" + password, user_password=password)
    return bytes(document.output())


def docx_file(heading: str, paragraphs: list[str], table: list[list[str]] | None = None, *, author: str = "") -> bytes:
    document = docx.Document()
    if author:
        document.core_properties.author = author
        document.core_properties.subject = "quarterly figures"
    document.add_heading(heading, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.cell(r, c).text = cell
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_file(entries: dict[str, bytes | str], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name)  # ZipInfo keeps the name as given, traversal included
            info.compress_type = compression
            archive.writestr(info, content.encode() if isinstance(content, str) else content)
    return out.getvalue()


def tar_file(entries: dict[str, bytes | str], *, mode: str = "w:gz", links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in entries.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return out.getvalue()
