"""Include/exclude globs matched in time linear in the path, whatever the pattern.

A glob translated to a regular expression backtracks: `**/a/**/a/**/...` against a deep path tries
every way of splitting it, and twenty `**/` hung discovery. (wcmatch translates to a regex too.) Here a
glob is compiled to a small automaton and the path is read once, keeping the *set* of automaton
states it could be in: at most (path length + 1) x (states) steps, with no backtracking at all.

Syntax: `**/` is zero or more whole folders, `**` anything (across folders), `*` anything within one
folder name, `?` one character other than `/`, `[abc]`, `[a-z]` and `[!a]` (or `[^a]`) one character
of (or not of) a class, never `/`. Anything else, a backslash included, stands for itself.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

CharTest = Callable[[str], bool]


@dataclass(frozen=True)
class _Node:
    """One automaton state: where each character it accepts leads, and where it leads for free."""

    moves: tuple[tuple[CharTest, int], ...]
    free: tuple[int, ...] = ()


def _not_slash(c: str) -> bool:
    return c != "/"


def _anything(c: str) -> bool:
    return True


def _is(char: str) -> CharTest:
    return lambda c: c == char


def _class(body: str) -> CharTest:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    ranges: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            ranges.append((body[i], body[i + 2]))
            i += 3
        else:
            ranges.append((body[i], body[i]))
            i += 1
    return lambda c: c != "/" and any(low <= c <= high for low, high in ranges) != negate


class Glob:
    """A compiled glob; `match` tells whether a whole root-relative POSIX path matches it."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        nodes: list[_Node] = []
        i = 0
        while i < len(pattern):
            here = len(nodes)
            if pattern.startswith("**/", i):
                # `(.*/)?`: skip it, or read anything up to and including a `/` that ends it.
                nodes.append(_Node((), (here + 1, here + 2)))
                nodes.append(_Node(((_anything, here + 1), (_is("/"), here + 2))))
                i += 3
            elif pattern.startswith("**", i):
                nodes.append(_Node(((_anything, here),), (here + 1,)))
                i += 2
            elif pattern[i] == "*":
                nodes.append(_Node(((_not_slash, here),), (here + 1,)))
                i += 1
            elif pattern[i] == "?":
                nodes.append(_Node(((_not_slash, here + 1),)))
                i += 1
            elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
                end = pattern.index("]", i + 2)  # a `]` right after `[` (or `[!`) is a member
                nodes.append(_Node(((_class(pattern[i + 1 : end]), here + 1),)))
                i = end + 1
            else:
                nodes.append(_Node(((_is(pattern[i]), here + 1),)))
                i += 1
        self._nodes = tuple(nodes)
        self._final = len(nodes)

    def _closure(self, states: set[int]) -> set[int]:
        stack = list(states)
        while stack:
            state = stack.pop()
            if state < self._final:
                for nxt in self._nodes[state].free:
                    if nxt not in states:
                        states.add(nxt)
                        stack.append(nxt)
        return states

    def run(self, path: str) -> tuple[bool, int]:
        """Whether the path matches, and how many character tests it took (the bound the tests check)."""
        states, steps = self._closure({0}), 0
        for c in path:
            following: set[int] = set()
            for state in states:
                if state == self._final:
                    continue
                for test, target in self._nodes[state].moves:
                    steps += 1
                    if test(c):
                        following.add(target)
            states = self._closure(following)
            if not states:
                return False, steps
        return self._final in states, steps

    def match(self, path: str) -> bool:
        return self.run(path)[0]

    @property
    def states(self) -> int:
        """Automaton states: at most two per pattern character."""
        return self._final + 1


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> Glob:
    return Glob(pattern)


def matches(relative: str, include: list[str], exclude: list[str]) -> bool:
    """Whether a root-relative POSIX path is included and not excluded."""
    return any(compile_glob(p).match(relative) for p in include) and not any(
        compile_glob(p).match(relative) for p in exclude
    )
