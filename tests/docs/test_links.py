"""Every relative link in the user docs this suite owns points at a file that exists, and the README links them."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_DOCS = ["getting-started", "ingestionjob", "operations", "troubleshooting", "security", "metrics"]
PAGES = [*(ROOT / "docs" / f"{doc}.md" for doc in USER_DOCS), ROOT / "charts" / "headrace" / "README.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", page.read_text())  # code spans hold regexes, not links
    return [m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [link for link in relative_links(page) if not (page.parent / link).exists()]
    assert missing == []


def test_readme_links_every_user_doc() -> None:
    linked = {(ROOT / link).resolve() for link in relative_links(ROOT / "README.md")}
    for doc in [*USER_DOCS, "api"]:
        assert (ROOT / "docs" / f"{doc}.md").resolve() in linked, doc


def test_the_link_check_notices_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("See [this](missing.md) and [that](https://example.com/x.md) and [self](page.md#top).")
    assert [link for link in relative_links(page) if not (page.parent / link).exists()] == ["missing.md"]
