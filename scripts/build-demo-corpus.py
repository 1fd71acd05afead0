#!/usr/bin/env python3
"""Rebuild the demo corpus from two public-domain texts packaged by Debian.

- Ambrose Bierce, "The Devil's Dictionary" (1911; copyright expired), package dict-devil.
- The Jargon File 4.4.7 (placed in the public domain by its editors), package dict-jargon.

Each book is split by initial letter into one document per letter, written as plain text,
Markdown or HTML so the demo exercises every format the worker reads. Run from the repository
root: `python scripts/build-demo-corpus.py` (needs apt-get and dpkg-deb).
"""

import gzip
import html
import shutil
import string
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

OUT = Path("headrace/samples/demo/corpus")
B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"


def b64(value: str) -> int:
    number = 0
    for ch in value:
        number = number * 64 + B64.index(ch)
    return number


def entries(workdir: Path, package: str, name: str) -> list[tuple[str, str]]:
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True, capture_output=True)
    deb = next(workdir.glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / package)], check=True)
    share = workdir / package / "usr/share/dictd"
    data = gzip.decompress((share / f"{name}.dict.dz").read_bytes())
    found = []
    for line in (share / f"{name}.index").read_text().splitlines():
        word, offset, length = line.split("\t")[:3]
        if word.startswith("00-database"):
            continue
        text = data[b64(offset) : b64(offset) + b64(length)].decode("utf-8")
        found.append((word, text))
    return found


def by_letter(items: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for word, text in items:
        first = word[:1].upper()
        if first.isalpha():
            groups[first].append((word, text))
    return groups


def write_text(path: Path, title: str, items: list[tuple[str, str]]) -> None:
    path.write_text(title + "\n\n" + "\n\n".join(text.strip() for _, text in items) + "\n")


def write_markdown(path: Path, title: str, items: list[tuple[str, str]]) -> None:
    body = "\n\n".join(f"## {word}\n\n{text.split(chr(10), 1)[-1].strip()}" for word, text in items)
    path.write_text(f"# {title}\n\n{body}\n")


def write_html(path: Path, title: str, items: list[tuple[str, str]]) -> None:
    body = "\n".join(
        f"<section><h2>{html.escape(word)}</h2>"
        + "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n")[1:] or [text] if p.strip())
        + "</section>"
        for word, text in items
    )
    path.write_text(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:serif}</style><script>window.analytics=[]</script></head>\n"
        '<body><nav><a href="index.html">Index</a> | <a href="#top">Top</a></nav>\n'
        f"<main><h1>{html.escape(title)}</h1>\n{body}\n</main>\n"
        "<footer>Converted for the Headrace demo corpus.</footer></body></html>\n"
    )


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        devil = by_letter(entries(work, "dict-devil", "devil"))
        jargon = by_letter(entries(work, "dict-jargon", "jargon"))
    writers = [(write_text, "txt"), (write_markdown, "md"), (write_html, "html")]
    for book, folder, groups in [
        ("The Devil's Dictionary", "devils-dictionary", devil),
        ("The Jargon File", "jargon-file", jargon),
    ]:
        (OUT / folder).mkdir(parents=True)
        for i, letter in enumerate(sorted(groups)):
            if folder == "jargon-file" and letter not in "ABCDFHKLMNPRSTW":
                continue  # a selection keeps the corpus to a few MB
            write, suffix = writers[i % 3]
            write(OUT / folder / f"{letter.lower()}.{suffix}", f"{book}: {letter}", groups[letter])


if __name__ == "__main__":
    main()
