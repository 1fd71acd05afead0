"""Search snippets: ts_headline marks matches with private-use sentinels, `render` turns them into output.

ts_headline copies the document's text as it is, so marking matches with `<mark>` in SQL would hand
any HTML in a crawled page (`<img onerror=...>`) to every UI that renders snippets. Instead matches
are delimited by two Unicode private-use characters, stripped from the text first, and `render`
escapes the text and only then adds the highlight tags (or none, for plain text).
"""

import html
from typing import Literal

START = "\ue000"
STOP = "\ue001"

Highlight = Literal["html", "none"]


def render(raw: str, highlight: Highlight = "html") -> str:
    """`html`: the text HTML-escaped, matches wrapped in `<mark></mark>`; `none`: plain text, unmarked."""
    if highlight == "none":
        return raw.replace(START, "").replace(STOP, "")
    return html.escape(raw, quote=True).replace(START, "<mark>").replace(STOP, "</mark>")
