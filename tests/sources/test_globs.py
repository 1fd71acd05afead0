"""Include/exclude globs: the usual meanings, and a cost bounded by path x pattern on hostile patterns."""

import re

import pytest

from headrace.worker.sources import globs
from headrace.worker.sources.globs import Glob, matches


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.md", "README.md", True),
        ("**/*.md", "docs/guide/intro.md", True),
        ("**/*.md", "docs/guide/intro.mdx", False),
        ("*.md", "docs/intro.md", False),  # `*` stays within one folder name
        ("docs/*.md", "docs/intro.md", True),
        ("docs/**", "docs/a/b/c.txt", True),
        ("docs/**/c.txt", "docs/c.txt", True),  # `**/` may be no folder at all
        ("docs/**/c.txt", "docs/a/b/c.txt", True),
        ("docs/**/c.txt", "docsa/c.txt", False),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("?", "/", False),
        ("[abc].txt", "b.txt", True),
        ("[a-c].txt", "d.txt", False),
        ("[!a-c].txt", "d.txt", True),
        ("[^a-c].txt", "a.txt", False),
        ("a[!x]b", "a/b", False),  # a class never matches `/`
        ("[.txt", "[.txt", True),  # an unclosed `[` stands for itself
        ("a+b (1).txt", "a+b (1).txt", True),  # regex metacharacters are plain characters
        ("a\\b", "a\\b", True),
        ("**", "", True),
        ("*", "", True),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_glob_meanings(pattern: str, path: str, expected: bool) -> None:
    assert Glob(pattern).match(path) is expected


def test_include_then_exclude() -> None:
    assert matches("docs/a.md", ["**/*.md"], ["drafts/**"])
    assert not matches("drafts/a.md", ["**/*.md"], ["drafts/**"])
    assert not matches("docs/a.txt", ["**/*.md"], [])


# Twenty `**/` against a path fifty folders deep: a backtracking regex tries every way of splitting it.
HOSTILE = [
    "**/" * 20 + "x.txt",
    "**/a/" * 20 + "x.txt",
    "**" * 30 + "x",
    "*a" * 30 + "x",
    "**/*a*/" * 12 + "**/x",
]
DEEP = "/".join(["a"] * 50) + "/b.txt"


@pytest.mark.parametrize("pattern", HOSTILE)
def test_hostile_patterns_cost_at_most_path_times_pattern(pattern: str) -> None:
    glob = Glob(pattern)
    matched, steps = glob.run(DEEP)
    assert not matched
    # Each character is tested at most twice per automaton state (two moves at most per state).
    assert steps <= len(DEEP) * 2 * glob.states
    assert glob.states <= 2 * len(pattern) + 1


def test_hostile_pattern_still_matches_what_it_should() -> None:
    assert Glob("**/" * 20 + "b.txt").match(DEEP)
    assert Glob("**/a/" * 20 + "b.txt").match(DEEP)


def test_the_matcher_has_no_regular_expression_to_backtrack() -> None:
    assert not any(isinstance(value, re.Pattern) for value in vars(globs).values())
    assert "re" not in vars(globs)
