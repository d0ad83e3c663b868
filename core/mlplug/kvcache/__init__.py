"""KV caches: where attention layers keep the keys and values of earlier positions.

:class:`CausalCache` holds one cell per position (or, with a sliding window ``W``, a ring of
``W + max_batch`` cells); :class:`WrapperCache` routes each layer to one of several caches
(Gemma 3: sliding-window layers and global layers). Caches are f16 unless asked otherwise.
"""

from __future__ import annotations

from .base import KVCache
from .causal import DEFAULT_HISTORY_BUCKET, CausalCache
from .wrapper import WrapperCache

__all__ = ["DEFAULT_HISTORY_BUCKET", "CausalCache", "KVCache", "WrapperCache"]
