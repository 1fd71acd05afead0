"""Word documents (DOCX): paragraph and table text with python-docx."""

import io
import zipfile
from typing import Any

import docx
from docx.opc.exceptions import PackageNotFoundError

from headrace.worker.errors import DocumentError

_TITLE_LIMIT = 300


def extract_docx(data: bytes) -> tuple[str, str, dict[str, Any]]:
    """The title (core property, else the first heading), the body text, paragraphs and table
    cells in document order, and the core properties (author, dates, ...). The zip container must
    already have passed the archive limits."""
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(f"corrupt DOCX: {type(exc).__name__}: {exc}") from None
    blocks: list[str] = []
    heading = ""
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            for row in block.rows:
                cells = [cell.text.strip() for cell in row.cells]
                blocks.append(" | ".join(c for c in cells if c))
            continue
        text = block.text.strip()
        if not text:
            continue
        style = (block.style.name or "").lower() if block.style is not None else ""
        if not heading and style.startswith(("heading", "title")):
            heading = text
        blocks.append(text)
    core = document.core_properties
    title = (core.title or heading).strip()[:_TITLE_LIMIT]
    meta = {
        "author": core.author,
        "subject": core.subject,
        "keywords": core.keywords,
        "category": core.category,
        "declaredLanguage": core.language,
        "created": core.created,
        "modified": core.modified,
    }
    return title, "\n\n".join(b for b in blocks if b), meta
