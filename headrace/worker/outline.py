"""Cut a document's text at its headings into sections that carry their heading path.

HTML and Markdown extractors hand over their text as a sequence of headings and runs of body text, in
document order; `sections` turns it into one `Section` per heading, each knowing the headings it
stands under (Installation, Configuration, Proxies), so the chunker can keep a chunk inside one
section and a search hit can say where it comes from."""

from collections.abc import Iterable
from dataclasses import dataclass

from headrace.worker.chunker import Section

MAX_DEPTH = 6
"""Headings deeper than this count as at this depth: the path keeps the outermost headings and the
nearest one. HTML and Markdown stop at six levels; the bound holds whatever a caller states."""
MAX_HEADING = 120
"""Characters kept of one heading in the path; the text itself keeps the whole heading."""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


def sections(parts: Iterable[Heading | str]) -> list[Section]:
    """One section for the text before the first heading (with no path) and one per heading after,
    its text starting with the heading's own. A heading directly followed by a deeper one opens no
    section of its own: its text goes with the first section under it, so no chunk is a lone title."""
    found: list[Section] = []
    path: list[tuple[int, str]] = []
    text: list[str] = []
    bodied = False  # whether `text` holds anything beyond headings

    def close() -> None:
        if "".join(text).strip():
            found.append(Section("\n\n".join(t.strip() for t in text if t.strip()), headings=tuple(h for _, h in path)))

    for part in parts:
        if isinstance(part, str):
            text.append(part)
            bodied = bodied or bool(part.strip())
            continue
        title = " ".join(part.text.split())
        if not title:
            continue
        level = min(max(part.level, 1), MAX_DEPTH)
        if bodied or not path or level <= path[-1][0]:
            close()
            text, bodied = [], False
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title if len(title) <= MAX_HEADING else title[: MAX_HEADING - 1].rstrip() + "…"))
        text.append(title)
    close()
    return found
