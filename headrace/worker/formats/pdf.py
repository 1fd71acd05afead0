"""PDF text, page by page, with pypdfium2 (PDFium, the engine of Chrome's PDF viewer)."""

from typing import Any

import pypdfium2 as pdfium

from headrace.worker.chunker import Section
from headrace.worker.errors import DocumentError
from headrace.worker.metadata import pdf_date

_TITLE_LIMIT = 300


def extract_pdf(data: bytes, *, max_pages: int) -> tuple[str, list[Section], dict[str, Any]]:
    """The title, one section per page (numbered from 1) and the document info (author, dates, ...).
    Encrypted, corrupt and over-long PDFs fail."""
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            raise DocumentError("encrypted PDF: it needs a password to open") from None
        raise DocumentError(f"corrupt PDF: {message}") from None
    try:
        pages = len(pdf)
        if pages > max_pages:
            raise DocumentError(f"PDF has {pages} pages, over limits.maxPdfPages ({max_pages})")
        sections = []
        for number in range(pages):
            try:
                page = pdf[number]
            except pdfium.PdfiumError as exc:
                raise DocumentError(f"corrupt PDF: page {number + 1}: {exc}") from None
            try:
                textpage = page.get_textpage()
                text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
                textpage.close()
            finally:
                page.close()
            if text.strip():
                sections.append(Section(text, page=number + 1))
        info = pdf.get_metadata_dict()
        title = str(info.get("Title", "")).strip()[:_TITLE_LIMIT]
        meta = {
            "author": info.get("Author"),
            "subject": info.get("Subject"),
            "keywords": info.get("Keywords"),
            "creator": info.get("Creator"),
            "created": pdf_date(info.get("CreationDate")),
            "modified": pdf_date(info.get("ModDate")),
            "pages": pages,
        }
    finally:
        pdf.close()
    if not sections:
        raise DocumentError("PDF has no extractable text (scanned images need OCR, which Headrace does not do)")
    return title, sections, meta
