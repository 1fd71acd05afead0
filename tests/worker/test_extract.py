"""Extractors on ordinary and hostile input: text or a DocumentError with a reason, never a crash."""

import pytest

from headrace.model.spec import Limits
from headrace.worker.errors import DocumentError
from headrace.worker.extract import extract, sniff_format

PAGE = b"""<!DOCTYPE html><html><head><title>Tides</title><style>p { color: red }</style>
<script>var secret = "do-not-index";</script></head>
<body><nav><a href="/">Home</a> navigation-only-text</nav><header>banner-text</header>
<main><h1>Tides</h1><p>The moon pulls the <b>ocean</b>.</p><p>Twice a day.</p></main>
<footer>footer-text</footer></body></html>"""


def test_html_keeps_main_text_and_drops_scripts_styles_and_navigation() -> None:
    result = extract(PAGE, name="tides.html")
    text = result.sections[0].text
    assert result.format == "html" and result.title == "Tides"
    assert "The moon pulls the ocean." in text and "Twice a day." in text
    for noise in ("do-not-index", "color: red", "navigation-only-text", "banner-text", "footer-text"):
        assert noise not in text


def test_html_paragraphs_stay_separate() -> None:
    text = extract(PAGE, name="tides.html").sections[0].text
    assert "The moon pulls the ocean.\n\nTwice a day." in text


def test_html_is_detected_by_content_not_only_by_name() -> None:
    assert sniff_format(PAGE, "page.txt") == "html"
    assert sniff_format(b"# Title\n\ntext", "notes.md") == "markdown"
    assert sniff_format(b"plain words", "notes.html") == "text"


DEEP = b"<html><body>" + b"<div>" * 50_000 + b"deep text" + b"</div>" * 50_000


def test_deeply_nested_html_is_extracted_within_limits_max_markup_depth() -> None:
    result = extract(DEEP, name="deep.html", limits=Limits(max_markup_depth=100_000))
    assert "deep text" in result.sections[0].text


@pytest.mark.parametrize(
    "page",
    [
        DEEP,
        b"<html><body>" + b"<div>" * 200_000,  # the 2.2 MB page that cost a parser a minute of CPU
        b"<html><body>" + b"<div><p>" * 200_000,  # unclosed <p>s are not counted, the <div>s are
        b"<svg>" + b"<g/><g>" * 20_000,  # self-closed tags are not counted, open ones are
    ],
)
def test_html_nested_deeper_than_limits_max_markup_depth_is_refused_before_parsing(page: bytes) -> None:
    with pytest.raises(DocumentError, match=r"more than 10000 elements deep, over limits.maxMarkupDepth"):
        extract(page, name="deep.html")


def test_markup_depth_counts_nesting_not_tags() -> None:
    siblings = b"<html><body>" + b"<div>x</div>" * 50_000
    unclosed_paragraphs = b"<html><body><ul>" + b"<li><p>item <br><img src=x>" * 50_000 + b"</ul>"
    for page in (siblings, unclosed_paragraphs):
        assert extract(page, name="wide.html", limits=Limits(max_markup_depth=16)).format == "html"
    with pytest.raises(DocumentError, match=r"more than 16 elements deep, over limits.maxMarkupDepth"):
        extract(b"<html><body>" + b"<section>" * 17 + b"text", name="deep.html", limits=Limits(max_markup_depth=16))


def test_html_that_never_closes_is_extracted() -> None:
    result = extract(b"<html><body><p>open paragraph <div><span>never closed", name="open.html")
    assert "never closed" in result.sections[0].text


def test_markdown_title_comes_from_the_first_heading() -> None:
    result = extract(b"intro line\n\n## Setting up\n\nSteps.", name="guide.md")
    assert result.format == "markdown" and result.title == "Setting up"


def test_latin1_text_is_decoded() -> None:
    result = extract("Déjà vu, naïve façade, été à Genève.".encode("latin-1") * 20, name="fr.txt")
    assert "Genève" in result.sections[0].text


def test_utf8_bom_is_dropped() -> None:
    assert extract(b"\xef\xbb\xbfhello there", name="bom.txt").sections[0].text == "hello there"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty document"),
        (b" \n\t\n ", "empty document"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 40, "binary content"),
        (bytes(range(1, 32)) * 300, "binary content"),
        (b"<html><head><script>only()</script></head><body><nav>menu</nav></body></html>", "no text"),
    ],
    ids=["empty", "whitespace", "elf-named-txt", "control-characters", "html-without-text"],
)
def test_hostile_input_fails_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        extract(data, name="input.txt" if b"<html" not in data else "input.html")


def test_invalid_utf8_either_decodes_or_fails_with_a_reason() -> None:
    data = b"valid start \xc3\x28 broken \xa0\xa1 sequence " * 50
    try:
        result = extract(data, name="broken.txt")
    except DocumentError as exc:
        assert "decode" in str(exc) or "binary" in str(exc)
    else:
        assert "valid start" in result.sections[0].text
