"""Heading paths: HTML and Markdown cut at their headings, each chunk knowing the headings it stands under."""

from headrace.model import Chunking
from headrace.worker.chunker import chunk_sections
from headrace.worker.extract import extract
from headrace.worker.outline import MAX_DEPTH, MAX_HEADING, Heading, sections

WORDS = " ".join(f"word{i}" for i in range(40))

HTML = f"""<!doctype html><html><head><title>Guide</title></head><body>
<nav><h2>Site menu</h2></nav>
<main>
<h1>Guide</h1><p>What the guide covers. {WORDS}</p>
<h2>Installation</h2>
<h3>Configuration</h3><p>Set the options. {WORDS}</p>
<h4>Proxies <code>HTTPS_PROXY</code></h4><p>Proxy settings. {WORDS}</p>
<h2>Usage</h2><p>Run it. {WORDS}</p>
</main></body></html>""".encode()

MARKDOWN = f"""# Guide

What the guide covers. {WORDS}

## Installation

### Configuration

Set the options:

```sh
# a comment in a code block, not a heading
```

{WORDS}

Proxies
-------

Proxy settings. {WORDS}

Usage
=====

Run it. {WORDS}
""".encode()


def paths(data: bytes, name: str) -> list[str]:
    chunks = chunk_sections(extract(data, name=name).sections, Chunking(target_size=4000, overlap=100))
    assert all(c.text.endswith(WORDS) for c in chunks)  # each section whole in one chunk, nothing of the next
    return [" > ".join(c.headings) for c in chunks]


def test_html_chunks_know_their_heading_path_and_never_straddle_two_sections() -> None:
    assert paths(HTML, "guide.html") == [
        "Guide",
        "Guide > Installation > Configuration",
        "Guide > Installation > Configuration > Proxies HTTPS_PROXY",
        "Guide > Usage",
    ]


def test_html_text_keeps_its_headings_and_drops_the_navigation() -> None:
    text = [c.text for c in chunk_sections(extract(HTML, name="guide.html").sections, Chunking())]
    assert text[1].startswith("Installation\n\nConfiguration\n\nSet the options.")
    assert not any("Site menu" in t for t in text)


def test_markdown_chunks_know_their_heading_path_and_code_comments_are_no_headings() -> None:
    assert paths(MARKDOWN, "guide.md") == [
        "Guide",
        "Guide > Installation > Configuration",
        "Guide > Proxies",  # underlined with ---: a second-level heading
        "Usage",  # underlined with ===: a first-level one
    ]


def test_a_section_longer_than_a_chunk_splits_inside_itself() -> None:
    long = (
        "# Guide\n\n## Tuning\n\n" + "\n\n".join(f"Paragraph {i}. {WORDS}" for i in range(20)) + "\n\n## Next\n\nEnd."
    )
    chunks = chunk_sections(extract(long.encode(), name="a.md").sections, Chunking(target_size=800, overlap=100))
    assert len(chunks) > 5
    assert all(len(c.text) <= 800 for c in chunks)
    assert [c.headings for c in chunks[:-1]] == [("Guide", "Tuning")] * (len(chunks) - 1)
    assert (chunks[-1].headings, chunks[-1].text) == (("Guide", "Next"), "Next\n\nEnd.")


def test_a_document_without_headings_has_no_path() -> None:
    for data, name in [
        (b"Just a note.\n\nNothing more.", "note.md"),
        (b"<html><body><p>Plain.</p></body></html>", "a.html"),
    ]:
        chunks = chunk_sections(extract(data, name=name).sections, Chunking())
        assert [c.heading_path for c in chunks] == [None]


def test_headings_deeper_than_the_bound_and_longer_than_the_limit_are_truncated() -> None:
    parts: list[Heading | str] = []
    for level in range(1, 40):
        parts += [Heading(level, f"Level {level}"), f"text {level}"]
    found = sections(parts)
    assert len(found) == 39
    assert found[-1].headings == (*[f"Level {n}" for n in range(1, MAX_DEPTH)], "Level 39")
    assert found[-1].text == "Level 39\n\ntext 39"

    huge = "<html><body><h1>" + "Title " * 5000 + "</h1><p>Body.</p></body></html>"
    chunks = chunk_sections(extract(huge.encode(), name="a.html").sections, Chunking())
    assert len(chunks) > 1
    assert {c.heading_path for c in chunks} == {"Title " * (MAX_HEADING // 6 - 1) + "Title…"}


def test_empty_headings_are_skipped() -> None:
    found = sections([Heading(1, "  "), "Body", Heading(2, ""), "More"])
    assert [(s.headings, s.text) for s in found] == [((), "Body\n\nMore")]
