"""Turn a document's bytes into text: format detection by content sniffing, then one extractor per format."""

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from charset_normalizer import from_bytes
from selectolax.lexbor import LexborHTMLParser

from headrace.worker.chunker import Section
from headrace.worker.errors import DocumentError

# Elements whose text is never part of a page's main content.
_HTML_NOISE = "script, style, noscript, template, nav, header, footer, aside, form, svg, iframe, button"
_HTML_BLOCKS = (
    "p, div, section, article, main, h1, h2, h3, h4, h5, h6, li, dt, dd, pre, blockquote, table, tr, figcaption, br, hr"
)
_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)
_MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}
_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
_TITLE_LIMIT = 300


@dataclass(frozen=True)
class Extracted:
    format: str
    title: str
    sections: list[Section]


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


def sniff_format(data: bytes, name: str) -> str:
    """`html`, `markdown` or `text`: content decides HTML; the name decides Markdown."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf")
    if _HTML_SNIFF.match(head):
        return "html"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _HTML_SUFFIXES and b"<" in head:
        return "html"
    if suffix in _MARKDOWN_SUFFIXES:
        return "markdown"
    return "text"


def extract(data: bytes, *, name: str) -> Extracted:
    """Extract the text of one document. Raises DocumentError with a reason when it cannot."""
    if not data.strip():
        raise DocumentError("empty document: no text to index")
    kind = sniff_format(data, name)
    text = decode_text(data)
    if kind == "html":
        return _extract_html(text)
    if _control_ratio(text) > 0.05:
        raise DocumentError("binary content: mostly control characters in what should be text")
    if kind == "markdown":
        return _extract_markdown(text, name)
    return Extracted("text", _first_line(text) or PurePosixPath(name).name, [Section(text)])


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:_TITLE_LIMIT]
    return ""


def _extract_markdown(text: str, name: str) -> Extracted:
    title = ""
    for line in text.splitlines():
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if heading:
            title = heading[1][:_TITLE_LIMIT]
            break
    return Extracted("markdown", title or _first_line(text) or PurePosixPath(name).name, [Section(text)])


def _extract_html(text: str) -> Extracted:
    tree = LexborHTMLParser(text)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else ""
    for node in tree.css(_HTML_NOISE):
        node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    if root is None:
        raise DocumentError("HTML has no body to extract text from")
    if not title:
        heading = root.css_first("h1")
        title = heading.text(strip=True) if heading else ""
    # Mark block ends so paragraphs survive as blank-line breaks in the flattened text.
    for block in root.css(_HTML_BLOCKS):
        block.insert_after("\n\n")
    body = root.text(separator="", strip=False)
    body = re.sub(r"[ \t\r\f\v\xa0]+", " ", body)
    body = re.sub(r" ?\n ?", "\n", body)
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    if not body:
        raise DocumentError("HTML has no text outside scripts, styles and navigation")
    return Extracted("html", title[:_TITLE_LIMIT] or _first_line(body), [Section(body)])
