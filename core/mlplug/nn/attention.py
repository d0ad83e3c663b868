"""Attention over a KV cache: store the new keys and values, then scaled dot-product attention."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context
    from ..kvcache import KVCache
    from ..tensor import Tensor

__all__ = ["attention"]


def attention(
    ctx: Context,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    cache: KVCache | None,
    layer: int = 0,
) -> Tensor:
    """Return attention of ``q`` ``[hd, H, T]`` over ``k``/``v`` ``[hd, H_kv, T]``: ``[hd·H, T]``.

    With a ``cache``, ``k``/``v`` are written to layer ``layer`` of it first and the queries
    attend to the cached history under the cache's mask (whose ``begin`` must have run for this
    forward pass). Without one, every query sees every key. Query head ``h`` reads kv head
    ``h // (H / H_kv)`` (grouped-query attention).
    """
    t = q.dim(2)
    if cache is None:
        out = q.scaled_dot_product_attention(ctx, k, v, None, None, None, scale, False)
    else:
        k_hist, v_hist, mask = cache.put(ctx, layer, k, v)
        out = q.scaled_dot_product_attention(ctx, k_hist, v_hist, mask, None, None, scale, True)
    return out.reshape(ctx, out.dim(0) * out.dim(1), t)
