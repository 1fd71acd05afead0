"""Turn a document's bytes into text: format detection by content sniffing, then one extractor per format."""

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import PurePosixPath
from typing import Any

from charset_normalizer import from_bytes
from selectolax.lexbor import LexborHTMLParser

from headrace.model import Limits
from headrace.worker.chunker import Section
from headrace.worker.errors import DocumentError
from headrace.worker.outline import Heading, sections

# Elements whose text is never part of a page's main content.
_HTML_NOISE = "script, style, noscript, template, nav, header, footer, aside, form, svg, iframe, button"
_HTML_BLOCKS = (
    "p, div, section, article, main, h1, h2, h3, h4, h5, h6, li, dt, dd, pre, blockquote, table, tr, figcaption, br, hr"
)
_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)
_MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}
_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
_JSON_SUFFIXES = {".json", ".geojson", ".jsonld"}
_CSV_SUFFIXES = {".csv", ".tsv"}
_TITLE_LIMIT = 300

# What a server's Content-Type says, for documents whose URL has no telling suffix.
_MEDIA_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "application/json": "json",
    "application/ld+json": "json",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
}
# Leading bytes of the binary formats we recognise; the ones we cannot read fail by name.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"PK\x03\x04", "zip"),
    (0, b"PK\x05\x06", "zip"),  # an empty zip
    (0, b"\x1f\x8b", "gzip"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (257, b"ustar", "tar"),
    (0, b"\x89PNG\r\n\x1a\n", "png image"),
    (0, b"\xff\xd8\xff", "jpeg image"),
    (0, b"GIF8", "gif image"),
    (0, b"\x7fELF", "ELF executable"),
    (0, b"MZ", "Windows executable"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office (OLE2) file"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (0, b"Rar!\x1a\x07", "rar archive"),
]
ARCHIVE_FORMATS = frozenset({"zip", "tar", "gzip", "bzip2", "xz"})


@dataclass(frozen=True)
class Extracted:
    format: str
    title: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the format itself says: PDF document info, DOCX core properties, HTML <meta>."""


def decode_text(data: bytes) -> str:
    """Decode bytes that should be text: UTF-8 (with or without BOM), else the detected charset."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DocumentError("binary content: NUL bytes in what should be text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    encoding = _guess_encoding(data[:1_000_000])
    if encoding is None:
        raise DocumentError("cannot decode text: not UTF-8 and no other character encoding fits")
    text = data.decode(encoding, errors="replace")
    if _control_ratio(text) > 0.05:
        raise DocumentError("binary content: mostly control characters in what should be text")
    return text


def _guess_encoding(sample: bytes) -> str | None:
    """charset-normalizer's best guess, except that windows-1252 wins a near tie: it is by far the
    most common legacy encoding of Western text, and short Latin-1 samples often tie with Baltic
    and Central European code pages."""
    matches = list(from_bytes(sample))
    if not matches:
        return None
    best = min(matches, key=lambda m: m.chaos)
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.2 and match.coherence >= best.coherence:
            return "cp1252"
    return str(best.encoding)


def _control_ratio(text: str) -> float:
    sample = text[:100_000]
    if not sample:
        return 0.0
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    return controls / len(sample)


def sniff_format(data: bytes, name: str, media_type: str | None = None) -> str:
    """The document's format, from its leading bytes first, then its name, then the media type a
    server announced: `pdf`, `docx`, an archive format, `html`, `markdown`, `json`, `csv` or `text`
    (or the name of a binary format Headrace cannot read)."""
    head = data[:4096]
    if b"%PDF-" in head[:1024]:
        return "pdf"
    for offset, magic, kind in _MAGIC:
        if data.startswith(magic, offset):
            return "docx" if kind == "zip" and _is_docx(data) else kind
    head = head.lstrip(b"\xef\xbb\xbf")
    if _HTML_SNIFF.match(head):
        return "html"
    suffix = PurePosixPath(name.split("?", 1)[0]).suffix.lower()
    announced = _MEDIA_TYPES.get((media_type or "").split(";", 1)[0].strip().lower())
    if (suffix in _HTML_SUFFIXES or announced == "html") and b"<" in head:
        return "html"
    if suffix in _MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in _JSON_SUFFIXES or (announced == "json" and head.lstrip()[:1] in (b"{", b"[")):
        return "json"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    return announced if announced in ("markdown", "csv") else "text"


def looks_like_archive(data: bytes) -> bool:
    """Whether the leading bytes are those of a zip (DOCX included) or a tar, compressed or not."""
    return any(data.startswith(magic, offset) for offset, magic, kind in _MAGIC if kind in ARCHIVE_FORMATS)


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False


def extract(data: bytes, *, name: str, limits: Limits | None = None, media_type: str | None = None) -> Extracted:
    """Extract the text of one document that is not an archive. Raises DocumentError with a reason
    when it cannot."""
    limits = limits or Limits()
    if not data.strip():
        raise DocumentError("empty document: no text to index")
    kind = sniff_format(data, name, media_type)
    if kind == "pdf":
        from headrace.worker.formats.pdf import extract_pdf

        title, sections, meta = extract_pdf(data, max_pages=limits.max_pdf_pages)
        return Extracted("pdf", title or _first_line(sections[0].text) or _basename(name), sections, meta)
    if kind == "docx":
        from headrace.worker.archives import check_zip
        from headrace.worker.formats.docx import extract_docx

        check_zip(data, limits, budget=limits.max_total_uncompressed_bytes)
        title, body, meta = extract_docx(data)
        if not body.strip():
            raise DocumentError("DOCX has no text")
        return Extracted("docx", title or _first_line(body) or _basename(name), [Section(body)], meta)
    if kind in ARCHIVE_FORMATS:
        raise DocumentError(f"{kind} archive where a single document was expected")
    if kind not in ("html", "markdown", "json", "csv", "text"):
        raise DocumentError(f"binary content: {kind} is not a supported format")
    text = decode_text(data)
    if kind == "html":
        check_markup_depth(text, limits.max_markup_depth)
        return _extract_html(text)
    if _control_ratio(text) > 0.05:
        raise DocumentError("binary content: mostly control characters in what should be text")
    if kind == "markdown":
        return _extract_markdown(text, name)
    if kind in ("json", "csv"):
        from headrace.worker.formats.data import csv_text, json_text

        body = json_text(text) if kind == "json" else csv_text(text)
        if not body.strip():
            raise DocumentError(f"{kind.upper()} holds no values to index")
        return Extracted(kind, _basename(name), [Section(body)])
    return Extracted("text", _first_line(text) or _basename(name), [Section(text)])


def _basename(name: str) -> str:
    return PurePosixPath(name.split("?", 1)[0].rstrip("/")).name or name


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:_TITLE_LIMIT]
    return ""


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A line that can be a setext heading's text: not blank, not indented code, not a list item or quote.
_PLAIN_LINE = re.compile(r"^ {0,3}(?![-*+>] |\d+[.)] |[-*+>]$)\S")


def _extract_markdown(text: str, name: str) -> Extracted:
    parts = list(_markdown_parts(text))
    title = next((p.text.strip() for p in parts if isinstance(p, Heading) and p.text.strip()), "")
    found = sections(parts) or [Section(text)]
    return Extracted("markdown", title[:_TITLE_LIMIT] or _first_line(text) or PurePosixPath(name).name, found)


def _markdown_parts(text: str) -> Iterator[Heading | str]:
    """Markdown's ATX (`## Title`) and setext (a one-line paragraph underlined with `===` or `---`)
    headings, and the lines between them; nothing inside a fenced code block is a heading."""
    lines = text.splitlines()
    body: list[str] = []
    fence = ""
    for line in lines:
        opened = _FENCE.match(line)
        if fence:
            if opened and opened[1][0] == fence[0] and len(opened[1]) >= len(fence):
                fence = ""
            body.append(line)
            continue
        if opened:
            fence = opened[1]
            body.append(line)
            continue
        atx = _ATX_HEADING.match(line)
        underline = _SETEXT_UNDERLINE.match(line)
        if atx:
            yield "\n".join(body)
            body = []
            yield Heading(len(atx[1]), atx[2] or "")
        elif underline and body and _PLAIN_LINE.match(body[-1]) and (len(body) == 1 or not body[-2].strip()):
            heading = body.pop()
            yield "\n".join(body)
            body = []
            yield Heading(1 if underline[1][0] == "=" else 2, heading)
        else:
            body.append(line)
    yield "\n".join(body)


_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^>]*?(/?)>")
# Elements that never hold others (void) or whose end tag HTML lets a page leave out: a page of
# unclosed <p>s is ordinary, not deep.
_VOID = ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"]
_OPTIONAL_END = ["p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup"]
_NOT_NESTING = frozenset([*_VOID, *_OPTIONAL_END, "rb", "rt", "rp", "colgroup", "caption"])


def check_markup_depth(text: str, limit: int) -> None:
    """Refuse markup nested deeper than `limit`, from a scan of its tags: linear, before any parser is
    quadratic in it. Raises DocumentError naming limits.maxMarkupDepth."""
    if text.count("<") <= limit:  # fewer tags than the limit cannot nest deeper than it
        return
    depth = 0
    for tag in _TAG.finditer(text):
        closing, name, self_closing = tag.groups()
        if self_closing or name.lower() in _NOT_NESTING:
            continue
        if closing:
            depth = max(0, depth - 1)
            continue
        depth += 1
        if depth > limit:
            raise DocumentError(
                f"HTML nested more than {limit} elements deep, over limits.maxMarkupDepth: refused before parsing"
            )


def _extract_html(text: str) -> Extracted:
    tree = LexborHTMLParser(text.translate(_MARKERS))
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else ""
    meta = _html_meta(tree)
    for node in tree.css(_HTML_NOISE):
        node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    if root is None:
        raise DocumentError("HTML has no body to extract text from")
    if not title:
        heading = root.css_first("h1")
        title = heading.text(strip=True) if heading else ""
    # Mark headings, and block ends so paragraphs survive as blank-line breaks in the flattened text.
    for heading in root.css(_HTML_HEADINGS):
        heading.insert_before(f"{_OPEN}{str(heading.tag)[1]}{_LEVEL}")
        heading.insert_after(_CLOSE)
    for block in root.css(_HTML_BLOCKS):
        block.insert_after("\n\n")
    body = root.text(separator="", strip=False)
    body = re.sub(r"[ \t\r\f\v\xa0]+", " ", body)
    body = re.sub(r" ?\n ?", "\n", body)
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    parts = _html_parts(body)
    body = "".join(p if isinstance(p, str) else f"\n\n{p.text}\n\n" for p in parts).strip()
    if not body:
        raise DocumentError("HTML has no text outside scripts, styles and navigation")
    return Extracted("html", title[:_TITLE_LIMIT] or _first_line(body), sections(parts), meta)


_HTML_HEADINGS = "h1, h2, h3, h4, h5, h6"
# Private-use characters that mark a heading in the flattened text; removed from the page beforehand.
_OPEN, _LEVEL, _CLOSE = "\ue000", "\ue001", "\ue002"
_MARKERS = str.maketrans("", "", _OPEN + _LEVEL + _CLOSE)
_MARKED_HEADING = re.compile(f"{_OPEN}([1-6]){_LEVEL}(.*?){_CLOSE}", re.DOTALL)


def _html_parts(body: str) -> list[Heading | str]:
    """The flattened text cut at its marked headings."""
    parts: list[Heading | str] = []
    start = 0
    for marked in _MARKED_HEADING.finditer(body):
        parts.append(body[start : marked.start()])
        parts.append(Heading(int(marked[1]), marked[2]))
        start = marked.end()
    parts.append(body[start:])
    return parts


# <meta name|property=...> worth filtering on, and the metadata key each becomes.
_HTML_META = {
    "description": "description",
    "og:description": "description",
    "keywords": "keywords",
    "author": "author",
    "article:author": "author",
    "article:published_time": "created",
    "article:modified_time": "modified",
    "dc.language": "declaredLanguage",
}


def _html_meta(tree: LexborHTMLParser) -> dict[str, Any]:
    """The page's <meta> description, keywords, author and dates, and its declared language."""
    meta: dict[str, Any] = {}
    for node in tree.css("meta"):
        attributes = node.attributes
        key = _HTML_META.get(str(attributes.get("name") or attributes.get("property") or "").lower())
        if key is None and str(attributes.get("http-equiv") or "").lower() == "content-language":
            key = "declaredLanguage"
        content = attributes.get("content")
        if key and content and key not in meta:
            meta[key] = content
    root = tree.css_first("html")
    if root is not None and root.attributes.get("lang"):
        meta["declaredLanguage"] = root.attributes["lang"]
    return meta
