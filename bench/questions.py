"""Evaluation sets for retrieval: questions on three documentation corpora that Debian ships.

Each corpus is the HTML of one Debian package (python3.11-doc, git-doc, sqlite3-doc), read where the
package installs it, else unpacked from `apt-get download` into the bench cache. Its questions are in
`bench/data/questions/<corpus>.jsonl`, one JSON object a line:

- `id`: stable, unique in its file;
- `kind`: `known-item` (a page's own title or synopsis), or a natural question of one of four kinds:
  `how-to` (a task in a user's words), `concept` (what something is or why), `error` (a pasted error
  message or warning), `keywords` (terse words, as typed into a search box);
- `query`: the text searched;
- `answer`: the page that answers it, relative to the corpus folder;
- `passage`: text that must appear on that page (whitespace aside) and answers the question; a test
  checks it (tests/bench/test_questions.py).

Natural questions were written from the documents, before any engine ranked them. Known-item
queries are generated from page titles (`python -m bench.questions`, which rewrites only those).
Every set splits into a development half (choices are made on it) and a held-out half (reported
after), by a hash of the question's id: the same split on every machine, whatever the file's order.
"""

import argparse
import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import common

DATA = common.ROOT / "bench" / "data" / "questions"
KINDS = ("known-item", "how-to", "concept", "error", "keywords")
NATURAL = KINDS[1:]
HALVES = ("dev", "held-out")
KNOWN_ITEMS = 120
"""Known-item queries per corpus: a deterministic sample of the pages with a usable title."""


@dataclass(frozen=True)
class Corpus:
    name: str
    package: str
    folder: str
    """Where the package installs its HTML."""
    skip: tuple[str, ...] = ()
    """Pages left out of the corpus (regular expressions on the relative path)."""

    @property
    def installed(self) -> Path | None:
        root = Path(self.folder)
        return root if root.is_dir() and any(root.glob("*.html")) else None

    def root(self, cache: Path = common.CACHE) -> Path:
        """The corpus folder: installed, or unpacked from the package (downloaded on first use)."""
        if (found := self.installed) is not None:
            return found
        unpacked = cache / self.package
        html = unpacked / self.folder.lstrip("/")
        if html.is_dir():
            return html
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as folder:
            try:
                subprocess.run(["apt-get", "download", self.package], cwd=folder, check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise SystemExit(f"cannot download {self.package} (run `apt-get update` first?): {exc}") from exc
            deb = next(Path(folder).glob(f"{self.package}_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
        return html

    def pages(self, root: Path) -> Iterator[Path]:
        skip = [re.compile(p) for p in self.skip]
        for path in sorted(root.rglob("*.html")):
            rel = path.relative_to(root).as_posix()
            if not any(p.search(rel) for p in skip):
                yield path


CORPORA = {
    "python": Corpus("python", "python3.11-doc", "/usr/share/doc/python3.11/html"),
    "git": Corpus("git", "git-doc", "/usr/share/doc/git-doc"),
    # The release notes (about 250 near-identical "SQLite Release 3.x.y" pages) are left out.
    "sqlite": Corpus("sqlite", "sqlite3-doc", "/usr/share/doc/sqlite3", skip=(r"^releaselog/",)),
}


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    query: str
    answer: str
    passage: str

    @property
    def half(self) -> str:
        """`dev` or `held-out`, by the parity of a hash of the id."""
        return HALVES[hashlib.sha256(self.id.encode()).digest()[0] % 2]


def load(corpus: str) -> list[Question]:
    path = DATA / f"{corpus}.jsonl"
    return [Question(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def normalise(text: str) -> str:
    """Text as a passage is matched: whitespace runs as one space, typographic quotes as plain ones."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip()


def page_text(path: Path) -> tuple[str, str]:
    """(title, text) of a page, as headrace's HTML extractor reads it."""
    from headrace.worker.extract import extract

    extracted = extract(path.read_bytes(), name=path.name)
    return extracted.title, "\n".join(s.text for s in extracted.sections)


_PYTHON_MODULE = re.compile(r"^(?P<module>[\w.]+) — (?P<synopsis>.+?) — Python [\d.]+ documentation$")
_PYTHON_PAGE = re.compile(r"^(?P<title>.+?) — Python [\d.]+ documentation$")
_GIT_NAME = re.compile(r"NAME\s+(?P<command>[\w.-]+) -\s+(?P<synopsis>[^\n]+)")


def known_item(corpus: str, rel: str, title: str, text: str) -> tuple[str, str] | None:
    """(query, passage) for a page from its title, or None when the title makes no fair query."""
    if corpus == "python":
        if (m := _PYTHON_MODULE.match(title)) and rel.startswith("library/"):
            return m["synopsis"], m["synopsis"]
        if (m := _PYTHON_PAGE.match(title)) and rel.split("/")[0] in {"howto", "tutorial", "faq", "using"}:
            return m["title"], m["title"]
        return None
    if corpus == "git":
        if m := _GIT_NAME.search(text):
            return m["synopsis"].strip(), m["synopsis"].strip()
        return (title, title) if rel.startswith("howto/") else None
    if corpus == "sqlite":
        words = title.split()
        if len(words) < 3 or (rel.startswith("c3ref/") and title.startswith("Constants")):
            return None
        return title, title
    raise ValueError(corpus)


def generate_known_items(corpus: str, limit: int = KNOWN_ITEMS) -> list[Question]:
    """Known-item queries from page titles: titles that occur once, each checked on its page."""
    spec = CORPORA[corpus]
    root = spec.root()
    found: list[tuple[str, str, str]] = []
    for path in spec.pages(root):
        rel = path.relative_to(root).as_posix()
        title, text = page_text(path)
        made = known_item(corpus, rel, title, text)
        if made and normalise(made[1]) in normalise(text):
            found.append((rel, *made))
    counts: dict[str, int] = {}
    for _, query, _ in found:
        counts[query.lower()] = counts.get(query.lower(), 0) + 1
    unique = [f for f in found if counts[f[1].lower()] == 1]
    unique.sort(key=lambda f: hashlib.sha256(f[0].encode()).hexdigest())
    return [
        Question(f"{corpus}-title-{rel}", "known-item", query, rel, passage)
        for rel, query, passage in sorted(unique[:limit])
    ]


def write_known_items(corpus: str) -> None:
    """Rewrite the corpus's known-item questions, keeping its natural ones as they are."""
    path = DATA / f"{corpus}.jsonl"
    natural = [q for q in load(corpus) if q.kind != "known-item"] if path.exists() else []
    questions = generate_known_items(corpus) + natural
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(q), ensure_ascii=False) + "\n" for q in questions))
    print(f"{path}: {len(questions) - len(natural)} known-item, {len(natural)} natural")


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the known-item queries of the evaluation sets")
    parser.add_argument("corpora", nargs="*", default=sorted(CORPORA))
    for corpus in parser.parse_args().corpora:
        write_known_items(corpus)


if __name__ == "__main__":
    main()
