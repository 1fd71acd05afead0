"""Split extracted text into overlapping chunks, cutting at paragraph, sentence or word boundaries, and
always between two sections under different headings, so a chunk knows where in its document it is."""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from headrace.model import Chunking

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Section:
    """A run of text from one place in a document: a PDF page, or what stands under one heading."""

    text: str
    page: int | None = None
    headings: tuple[str, ...] = ()
    """The headings the text stands under, outermost first (headrace/worker/outline.py)."""


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    page: int | None
    headings: tuple[str, ...] = ()

    @property
    def heading_path(self) -> str | None:
        """The headings joined with HEADING_SEPARATOR for display and storage ("Installation, then
        Configuration, then Proxies" as one string), or None when the chunk stands under no heading."""
        return HEADING_SEPARATOR.join(self.headings) or None


HEADING_SEPARATOR = " \u203a "  # a single right-pointing angle quotation mark between spaces


def _pieces(text: str, boundary: str, limit: int) -> Iterator[str]:
    """Break text into pieces no longer than `limit`, preferring the coarsest boundary allowed."""
    if boundary == "paragraph":
        for paragraph in _PARAGRAPH_BREAK.split(text):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            if len(paragraph) <= limit:
                yield paragraph
            else:
                yield from _pieces(paragraph, "sentence", limit)
    elif boundary == "sentence":
        for sentence in _SENTENCE_END.split(text):
            sentence = _WHITESPACE.sub(" ", sentence).strip()
            if not sentence:
                continue
            if len(sentence) <= limit:
                yield sentence
            else:
                yield from _pieces(sentence, "none", limit)
    else:
        yield from _words(text, limit)


def _words(text: str, limit: int) -> Iterator[str]:
    """Greedy word packing; a single word longer than `limit` is cut hard."""
    line: list[str] = []
    size = 0
    for word in text.split():
        while len(word) > limit:
            if line:
                yield " ".join(line)
                line, size = [], 0
            yield word[:limit]
            word = word[limit:]
        if size + len(word) + (1 if line else 0) > limit:
            yield " ".join(line)
            line, size = [], 0
        line.append(word)
        size += len(word) + (1 if len(line) > 1 else 0)
    if line:
        yield " ".join(line)


def _tail(text: str, overlap: int) -> str:
    """The last `overlap` characters of text, starting at a word boundary."""
    if overlap <= 0 or len(text) <= overlap:
        return text if overlap > 0 else ""
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def chunk_sections(sections: Iterable[Section], settings: Chunking) -> list[Chunk]:
    """Pack the sections' pieces into chunks of about `targetSize` characters with `overlap`. A chunk
    never spans two sections under different headings: the chunk ends where the headings change, and
    its overlap is not carried across."""
    target, overlap = settings.target_size, settings.overlap
    separator = "\n\n" if settings.boundary == "paragraph" else " "
    chunks: list[Chunk] = []
    parts: list[str] = []
    length = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    fresh = False  # whether `parts` holds anything beyond the overlap carried from the last chunk

    def flush() -> None:
        nonlocal parts, length, page, fresh
        if not fresh:
            return
        text = separator.join(parts).strip()
        chunks.append(Chunk(len(chunks), text, page, headings))
        carried = _tail(text, overlap)
        parts, length, fresh = ([carried], len(carried), False) if carried else ([], 0, False)

    for section in sections:
        if section.headings != headings:
            flush()
            parts, length, headings = [], 0, section.headings
        for piece in _pieces(section.text, settings.boundary, target - overlap):
            if fresh and length + len(separator) + len(piece) > target:
                flush()
            if not fresh:
                page = section.page
            parts.append(piece)
            length += len(piece) + (len(separator) if len(parts) > 1 else 0)
            fresh = True
    flush()
    return chunks
