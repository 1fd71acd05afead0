"""How `headrace search` and `headrace demo` print search hits: for people (default and `wide`) and for
programs (`json`, `yaml`), as kubectl's `-o` does.

A hit is *weak* when its passage contains none of the query's words (no keyword match at all): only
embeddings ranked it, so it may be a near miss or, for a nonsense query, nothing to do with it.
"""

import json
from typing import Any, Literal

import yaml
from rich.console import Console
from rich.markup import escape

from headrace.store.search import SearchHit
from headrace.store.search.snippets import START, STOP, render

Output = Literal["text", "wide", "json", "yaml"]
OUTPUTS: tuple[Output, ...] = ("text", "wide", "json", "yaml")


def is_weak(hit: SearchHit) -> bool:
    """No word of the query in the passage: only its meaning (embeddings) put it here."""
    return START not in hit.snippet


def as_dict(hit: SearchHit, *, full: bool) -> dict[str, Any]:
    """A hit as plain data, with the API's field names."""
    return {
        "namespace": hit.namespace,
        "job": hit.job,
        "uri": hit.uri,
        "title": hit.title,
        "chunkId": hit.chunk_id,
        "ordinal": hit.ordinal,
        "page": hit.page,
        "headingPath": hit.heading_path,
        "score": hit.score,
        "weak": is_weak(hit),
        "snippet": render(hit.snippet, "none"),
        **({"text": hit.text} if full else {}),
        "metadata": hit.metadata,
    }


def print_hits(
    console: Console,
    query: str,
    hits: list[SearchHit],
    *,
    mode: str,
    output: Output = "text",
    full: bool = False,
) -> None:
    """Print the hits of one query in `output` form; `full` prints whole passages instead of snippets."""
    if output in ("json", "yaml"):
        document = {"query": query, "mode": mode, "hits": [as_dict(hit, full=full) for hit in hits]}
        # Written as is, never through rich: it would wrap long lines at the terminal's width.
        if output == "json":
            console.file.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
        else:
            console.file.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        console.file.flush()
        return
    weak = sum(is_weak(hit) for hit in hits)
    note = f", {weak} weak: no word of the query in them" if weak else ""
    console.print(f"\n[bold]Search:[/bold] {escape(query)}  ({len(hits)} results{note})")
    for n, hit in enumerate(hits, 1):
        console.print(_heading(n, hit, wide=output == "wide"), highlight=False)
        console.print(f"    {escape(hit.title)}", style="bold", highlight=False)
        if hit.heading_path:
            console.print(f"    [dim]{escape(hit.heading_path)}[/dim]", highlight=False)
        if output == "wide" and hit.metadata:
            pairs = ", ".join(f"{key}={value}" for key, value in sorted(hit.metadata.items()))
            console.print(f"    [dim]{escape(pairs)}[/dim]", highlight=False)
        passage = hit.text if full else " ".join(hit.snippet.split())
        if full:  # the whole passage has no marks: highlight nothing rather than a fragment
            console.print(_indent(escape(passage)), highlight=False)
        else:
            marked = escape(passage).replace(START, "[bold yellow]").replace(STOP, "[/]")
            console.print(f"    {marked}", highlight=False)


def _heading(n: int, hit: SearchHit, *, wide: bool) -> str:
    """`1. docs/guide.md #3  team-a/handbook  score 0.01639`, with `weak` when it is."""
    where = f"[cyan]{escape(hit.uri)}[/cyan] [dim]#{hit.ordinal}"
    if hit.page is not None:
        where += f" p.{hit.page}"
    line = (
        f"{n:>2}. {where}[/dim]  [green]{escape(hit.namespace)}/{escape(hit.job)}[/green]  [dim]score {hit.score:.4g}"
    )
    if wide:
        line += f"  chunk {hit.chunk_id}"
    line += "[/dim]"
    if is_weak(hit):
        line += "  [magenta]weak: no keyword match[/magenta]"
    return line


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.strip().splitlines())
