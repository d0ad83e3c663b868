"""Pair merging shared by SentencePiece and BPE: join the best adjacent pair until none is left.

Both tokenizers start from single characters and repeatedly join the adjacent pair with the best
priority (SentencePiece: the highest score of the joined token; BPE: the lowest merge rank),
the leftmost pair on ties. A heap keeps this O(n log n); stale pairs are skipped when popped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["merge_pairs"]

#: Returns the priority of joining two symbols (lower merges first), or None when they cannot join.
Priority = Callable[[str, str], float | None]


def merge_pairs(symbols: list[str], priority: Priority) -> list[str]:
    """Merge adjacent ``symbols`` best-priority first; return the merged symbols in order."""
    n = len(symbols)
    if n < 2:
        return list(symbols)
    text = list(symbols)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    nxt[-1] = -1
    heap: list[tuple[float, int, int, str]] = []

    def push(left: int) -> None:
        right = nxt[left]
        if left < 0 or right < 0:
            return
        p = priority(text[left], text[right])
        if p is not None:
            heapq.heappush(heap, (p, left, right, text[left] + text[right]))

    for i in range(n - 1):
        push(i)
    while heap:
        _, left, right, joined = heapq.heappop(heap)
        if not text[left] or not text[right] or nxt[left] != right:
            continue
        if text[left] + text[right] != joined:
            continue
        text[left] = joined
        text[right] = ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
        if prv[left] >= 0:
            push(prv[left])
        push(left)
    return [t for t in text if t]
