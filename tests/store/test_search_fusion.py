"""Hybrid fusion (fusion.fuse): a weighted sum of each ranking's scores scaled to 0..1."""

from headrace.store.search import fusion

KEYWORD = fusion.KEYWORD_WEIGHT
SEMANTIC = 1 - KEYWORD


def test_a_keyword_hit_far_above_the_rest_stays_first() -> None:
    # BM25 puts chunk 1 far ahead; the semantic ranking likes chunk 2 best and chunk 1 last.
    keyword = [(1, 30.0), (2, 6.0), (3, 5.0)]
    semantic = [(2, 0.81), (3, 0.80), (1, 0.79)]
    fused = fusion.fuse([(keyword, KEYWORD), (semantic, SEMANTIC)], None, 3)
    assert [chunk for chunk, _ in fused] == [1, 2, 3]


def test_a_chunk_both_rankings_like_beats_one_only_one_likes() -> None:
    keyword = [(1, 10.0), (2, 9.9), (3, 1.0)]
    semantic = [(2, 0.9), (4, 0.5), (1, 0.1)]
    fused = dict(fusion.fuse([(keyword, KEYWORD), (semantic, SEMANTIC)], None, 10))
    assert fused[2] > fused[1] > fused[4]
    assert fused[3] == 0.0  # last in the only ranking that has it


def test_pages_after_a_cursor_hold_each_hit_once() -> None:
    keyword = [(i, 100.0 - i) for i in range(1, 40)]
    semantic = [(i, 1.0 - i / 100) for i in range(20, 60)]
    rankings = [(keyword, KEYWORD), (semantic, SEMANTIC)]
    whole = fusion.fuse(rankings, None, 1000)
    seen: list[tuple[int, float]] = []
    after = None
    while page := fusion.fuse(rankings, after, 7):
        seen += page
        after = (page[-1][1], page[-1][0])
    assert seen == whole and len({chunk for chunk, _ in seen}) == len(whole)
