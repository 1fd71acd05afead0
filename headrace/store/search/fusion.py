"""Hybrid fusion: the keyword and semantic candidates, fused by a weighted sum of their scores."""

KEYWORD_WEIGHT = 0.8
"""Hybrid search's weight of the keyword score (the semantic score's is 1 minus it), both scaled to
0..1 within their lists. Chosen on the development halves of our evaluation sets (bench/retrieval.py,
docs/benchmarks.md), among reciprocal rank fusion (k 10 to 60, keyword weight 1 to 4) and weights 0.5
to 0.9: the only choice there that beat keyword alone on every corpus (MRR@10 +0.03 to +0.06); RRF
with weight 2, the previous default, trailed keyword alone by 0.04 overall. A form-adaptive weight
(less keyword for questions) did no better."""


def hybrid(
    keyword: list[tuple[int, float]], semantic: list[tuple[int, float]], after: tuple[float, int] | None, limit: int
) -> list[tuple[int, float]]:
    """Hybrid search's ranking: the keyword and semantic candidates fused with KEYWORD_WEIGHT."""
    return fuse([(keyword, KEYWORD_WEIGHT), (semantic, 1 - KEYWORD_WEIGHT)], after, limit)


def fuse(
    rankings: list[tuple[list[tuple[int, float]], float]], after: tuple[float, int] | None, limit: int
) -> list[tuple[int, float]]:
    """A weighted sum of best-first rankings' scores, each ranking's scaled to 0..1 (min-max: its last
    candidate 0, its first 1; all 1 when they are equal), then the keyset page after `after`. Scores,
    not ranks: a keyword list whose best chunk stands far above the rest keeps it first, where rank
    fusion would let a semantic neighbour overtake it."""
    fused: dict[int, float] = {}
    for ranking, weight in rankings:
        if not ranking:
            continue
        best, worst = ranking[0][1], ranking[-1][1]
        for chunk_id, score in ranking:
            scaled = (score - worst) / (best - worst) if best > worst else 1.0
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * scaled
    # Scores go through a JSON cursor and back: round so a float's repr cannot shift an equal score.
    ordered = sorted(((cid, round(score, 12)) for cid, score in fused.items()), key=lambda h: (-h[1], h[0]))
    if after is not None:
        ordered = [h for h in ordered if h[1] < after[0] or (h[1] == after[0] and h[0] > after[1])]
    return ordered[:limit]
