"""The chunker: sizes, boundaries, overlap and page tracking."""

import itertools

from headrace.model import Chunking
from headrace.worker.chunker import HEADING_SEPARATOR, Section, chunk_sections

PARAGRAPHS = [f"Paragraph {i} opens here. " + " ".join(f"w{i}x{j}" for j in range(45)) + "." for i in range(12)]


def test_chunks_respect_the_target_size() -> None:
    settings = Chunking(target_size=600, overlap=60)
    chunks = chunk_sections([Section("\n\n".join(PARAGRAPHS))], settings)
    assert len(chunks) > 3
    assert all(len(c.text) <= settings.target_size for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_paragraph_boundary_never_cuts_a_paragraph_that_fits() -> None:
    chunks = chunk_sections([Section("\n\n".join(PARAGRAPHS))], Chunking(target_size=1000, overlap=0))
    for chunk in chunks:
        for piece in chunk.text.split("\n\n"):
            assert piece in PARAGRAPHS


def test_every_word_survives_chunking() -> None:
    text = "\n\n".join(PARAGRAPHS)
    chunks = chunk_sections([Section(text)], Chunking(target_size=500, overlap=100))
    indexed = set(" ".join(c.text for c in chunks).split())
    assert set(text.split()) <= indexed


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    chunks = chunk_sections([Section("\n\n".join(PARAGRAPHS))], Chunking(target_size=600, overlap=120))
    for before, after in itertools.pairwise(chunks):
        head = after.text.split()[0]
        assert head in before.text.split()[-25:]


def test_sentence_boundary_cuts_between_sentences() -> None:
    text = " ".join(f"Sentence number {i} says something short." for i in range(60))
    chunks = chunk_sections([Section(text)], Chunking(target_size=300, overlap=0, boundary="sentence"))
    assert all(c.text.endswith(".") for c in chunks)


def test_a_word_longer_than_the_target_is_cut_hard() -> None:
    chunks = chunk_sections([Section("x" * 2500)], Chunking(target_size=1000, overlap=0))
    assert [len(c.text) for c in chunks] == [1000, 1000, 500]


def test_chunks_carry_the_page_they_start_on() -> None:
    pages = [Section(" ".join(f"page{p}word{i}" for i in range(120)), page=p) for p in (1, 2, 3)]
    chunks = chunk_sections(pages, Chunking(target_size=500, overlap=0))
    assert chunks[0].page == 1 and chunks[-1].page == 3
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)  # type: ignore[type-var]


def test_empty_text_makes_no_chunks() -> None:
    assert chunk_sections([Section("  \n\n  ")], Chunking()) == []


def test_a_chunk_ends_where_the_headings_change_and_carries_no_overlap_across() -> None:
    sections = [
        Section("Installation\n\n" + " ".join(f"install{i}" for i in range(60)), headings=("Installation",)),
        Section("Proxies\n\n" + " ".join(f"proxy{i}" for i in range(60)), headings=("Installation", "Proxies")),
    ]
    chunks = chunk_sections(sections, Chunking(target_size=2000, overlap=200))
    assert [c.headings for c in chunks] == [("Installation",), ("Installation", "Proxies")]
    assert "proxy" not in chunks[0].text
    assert "install" not in chunks[1].text.replace("Installation", "")


def test_a_long_section_splits_within_its_size_and_every_chunk_keeps_the_path() -> None:
    text = "\n\n".join(PARAGRAPHS)
    chunks = chunk_sections([Section("Intro"), Section(text, headings=("Guide", "Usage"))], Chunking(target_size=600))
    assert chunks[0].heading_path is None
    assert len(chunks) > 3
    assert all(c.heading_path == f"Guide{HEADING_SEPARATOR}Usage" and len(c.text) <= 600 for c in chunks[1:])
