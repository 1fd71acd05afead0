"""The evaluation sets (bench/questions.py): every answer passage is on its answer page, the sets are
well formed, and each splits the same way into development and held-out halves."""

import pytest

from bench import questions

CORPORA = sorted(questions.CORPORA)


@pytest.mark.parametrize("corpus", CORPORA)
def test_every_question_is_well_formed(corpus: str) -> None:
    found = questions.load(corpus)
    assert len({q.id for q in found}) == len(found), "ids are unique"
    assert {q.kind for q in found} == set(questions.KINDS), "every kind is asked"
    for q in found:
        assert q.query.strip() and q.passage.strip() and q.answer.endswith(".html"), q
    # Each kind has questions in both halves, so every kind is reported on held-out questions.
    for kind in questions.KINDS:
        assert {q.half for q in found if q.kind == kind} == set(questions.HALVES), kind


@pytest.mark.parametrize("corpus", CORPORA)
def test_every_answer_passage_is_on_its_page(corpus: str) -> None:
    spec = questions.CORPORA[corpus]
    root = spec.installed
    if root is None:
        pytest.skip(f"Debian package {spec.package} is not installed (apt-get install {spec.package})")
    pages: dict[str, str] = {}
    missing = []
    for q in questions.load(corpus):
        path = root / q.answer
        assert path.is_file(), f"{q.id}: no page {q.answer}"
        assert any(p == path for p in spec.pages(root)), f"{q.id}: {q.answer} is left out of the corpus"
        if q.answer not in pages:
            pages[q.answer] = questions.normalise(questions.page_text(path)[1])
        if questions.normalise(q.passage) not in pages[q.answer]:
            missing.append(f"{q.id}: {q.passage!r} is not on {q.answer}")
    assert not missing, "\n".join(missing)


def test_the_split_depends_on_the_id_only() -> None:
    one = questions.Question("git-how-to-001", "how-to", "a", "x.html", "p")
    other = questions.Question("git-how-to-001", "concept", "b", "y.html", "q")
    assert one.half == other.half
    halves = {questions.Question(f"q{i}", "concept", "a", "x.html", "p").half for i in range(20)}
    assert halves == set(questions.HALVES)
