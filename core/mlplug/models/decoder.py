"""What decoder-only architectures share: weight checks, batching, output pruning, the cache."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from ..dtypes import DType
from ..errors import ModelFileError, ShapeError
from ..nn import Embedding, Linear, RMSNorm
from .base import Model
from .passes import BuiltPass, PassCache

if TYPE_CHECKING:
    from ..backend import Backend
    from ..context import Context
    from ..kvcache import KVCache
    from ..tensor import Tensor

__all__ = ["DEFAULT_NUM_CTX", "Decoder", "Weights"]

#: Cache positions when neither the caller nor the file says (and the most by default).
DEFAULT_NUM_CTX: Final = 2048


class Weights:
    """The weights of a model file, each checked against the shape the config implies.

    Every :meth:`need` / :meth:`maybe` raises at once, so a model checks all of them in its
    constructor, before any compute.
    """

    def __init__(self, backend: Backend, architecture: str) -> None:
        self.backend = backend
        self.architecture = architecture

    def _fail(self, name: str, msg: str) -> ModelFileError:
        return ModelFileError(str(self.backend.model_path), msg, key=name)

    def maybe(self, name: str, *shape: int) -> Tensor | None:
        """Return tensor ``name`` or None; if present it must have ``shape`` (ggml order)."""
        t = self.backend.get(name)
        if t is None:
            return None
        want = (*shape, *(1,) * (4 - len(shape)))
        have = tuple(t.dim(i) for i in range(4))
        if have != want:
            msg = (
                f"{self.architecture}: tensor {name!r} has shape {list(t.shape)}, the "
                f"hyper-parameters need {list(shape)}"
            )
            raise self._fail(name, msg)
        return t

    def need(self, name: str, *shape: int) -> Tensor:
        """Return tensor ``name`` (which must exist and have ``shape``)."""
        t = self.maybe(name, *shape)
        if t is None:
            msg = f"{self.architecture} needs tensor {name!r}, the file has none"
            raise self._fail(name, msg)
        return t

    def dim(self, name: str, n: int) -> int:
        """Return dim ``n`` of tensor ``name`` (which must exist)."""
        t = self.backend.get(name)
        if t is None:
            msg = f"{self.architecture} needs tensor {name!r}, the file has none"
            raise self._fail(name, msg)
        return t.dim(n)


def check_heads(backend: Backend, width: int, heads: int, heads_kv: int) -> None:
    """Raise ModelFileError unless ``heads`` divides ``width`` and ``heads_kv`` ``heads``."""
    path = str(backend.model_path)
    if width < 1 or heads < 1 or width % heads:
        msg = f"embedding_length {width} must be a positive multiple of head_count {heads}"
        raise ModelFileError(path, msg, key="attention.head_count")
    if heads_kv < 1 or heads % heads_kv:
        msg = f"head_count {heads} must be a positive multiple of head_count_kv {heads_kv}"
        raise ModelFileError(path, msg, key="attention.head_count_kv")


class Decoder(Model):
    """A decoder-only model: token ids in, logits of chosen positions out, a KV cache between.

    Subclasses read their options and weights, create :attr:`cache`, and build one pass's
    graph in :meth:`build`. :meth:`forward` validates the input, splits it into passes of at
    most ``cache.max_batch`` tokens and gathers the wanted logits.

    A pass whose shape (tokens, logits wanted, the cache's history length) was built before is
    not built again: its kept graph gets the new inputs and is computed again (see
    :mod:`mlplug.models.passes`; :attr:`reuse_passes` turns this off). The kept passes are freed
    with the model (:meth:`close`).
    """

    #: Whether a pass of an already-built shape reuses that graph (False: every pass builds).
    reuse_passes: bool = True
    _passes: PassCache | None = None

    cache: KVCache
    _vocab: int
    #: The transformer blocks, in order (their type is the architecture's own).
    blocks: Sequence[object]
    #: The token embedding (``token_embd.weight``), set by :meth:`read_embedding`.
    embed: Embedding
    #: The final norm (``output_norm.weight``), set by :meth:`read_head`.
    output_norm: RMSNorm
    #: The output projection (``output.weight``; the embedding when tied), set by
    #: :meth:`read_head`.
    output: Linear

    def read_embedding(self, w: Weights, width: int) -> None:
        """Read ``token_embd.weight`` (``[width, vocab]``); the vocabulary size comes from it."""
        self._vocab = w.dim("token_embd.weight", 1)
        self.embed = Embedding(w.need("token_embd.weight", width, self._vocab))

    def read_head(self, w: Weights, width: int, eps: float) -> None:
        """Read the final norm and ``output.weight`` (``[width, vocab]``).

        A file without ``output.weight`` ties the output to the embedding: the model-file layer
        creates the tied copy under that name when it loads the weights.
        """
        self.output_norm = RMSNorm(w.need("output_norm.weight", width), eps)
        self.output = Linear(w.need("output.weight", width, self._vocab))

    def head(self, ctx: Context, x: Tensor, out_ids: Tensor) -> Tensor:
        """Return the logits ``[vocab, len(out_ids)]``: final norm, then the output projection.

        ``x`` is the last block's output, which holds only the wanted positions (a model with
        no blocks passes every position, and the wanted ones are taken here).
        """
        if not self.blocks:
            x = x.rows(ctx, out_ids)
        return self.output.forward(ctx, self.output_norm.forward(ctx, x))

    @property
    def vocab_size(self) -> int:
        """Number of logits per output position."""
        return self._vocab

    @property
    def capacity(self) -> int:
        """Number of positions the KV cache holds."""
        return self.cache.capacity

    @staticmethod
    def default_ctx(num_ctx: int | None, context_length: int) -> int:
        """Return ``num_ctx``, or the file's context length capped at :data:`DEFAULT_NUM_CTX`."""
        if num_ctx is None:
            return max(min(context_length or DEFAULT_NUM_CTX, DEFAULT_NUM_CTX), 1)
        if num_ctx < 1:
            msg = f"num_ctx must be at least 1, got {num_ctx}"
            raise ShapeError(msg, op="load_model")
        return num_ctx

    @staticmethod
    def kv_type(kv_dtype: DType | str) -> DType:
        """Return the cache dtype for ``"f16"``/``"f32"`` or a DType."""
        if isinstance(kv_dtype, DType):
            return kv_dtype
        names = {"f16": DType.F16, "f32": DType.F32}
        if kv_dtype.lower() not in names:
            msg = f"kv_dtype must be f16 or f32, got {kv_dtype!r}"
            raise ShapeError(msg, op="load_model")
        return names[kv_dtype.lower()]

    @abstractmethod
    def build(self, ctx: Context, ids: Tensor, pos: Tensor, out_ids: Tensor) -> Tensor:
        """Return the logits ``[vocab, len(out_ids)]`` of one pass (the cache has begun)."""

    def forward(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        outputs: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Run ``tokens`` at ``positions`` through the model, extending the KV cache.

        :param outputs: indices into ``tokens`` whose logits to return (default: the last).
        :returns: float32 logits ``(len(outputs), vocab_size)``.
        :raises ShapeError: empty input, mismatched lengths, a token outside the vocabulary,
            an output index outside ``tokens``, or a position outside the cache (a prompt
            longer than the context).
        """
        n = len(tokens)
        if n == 0 or len(positions) != n:
            msg = f"forward needs as many positions as tokens (> 0), got {n} and {len(positions)}"
            raise ShapeError(msg, op="forward")
        ids = np.asarray(tokens, dtype=np.int64)
        pos = np.asarray(positions, dtype=np.int64)
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            msg = f"token ids must lie in [0, {self.vocab_size}), got {bad[:8].tolist()}"
            raise ShapeError(msg, op="forward")
        if pos.min() < 0 or pos.max() >= self.capacity:
            msg = (
                f"positions must lie in [0, {self.capacity}) (the context), got "
                f"{int(pos.min())}..{int(pos.max())}"
            )
            raise ShapeError(msg, op="forward")
        rows = np.asarray([n - 1] if outputs is None else list(outputs), dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            msg = f"outputs must index the {n} tokens, got {rows.tolist()}"
            raise ShapeError(msg, op="forward")
        step = self.cache.max_batch
        if n <= step and rows.size:  # one pass (every decode step): its logits, as they come
            return self._pass(ids, pos, rows)
        result = np.zeros((rows.size, self.vocab_size), dtype=np.float32)
        for start in range(0, n, step):
            stop = min(start + step, n)
            which = np.flatnonzero((rows >= start) & (rows < stop))
            # A pass whose logits nobody wants still computes one row (its last token).
            local = rows[which] - start if which.size else np.asarray([stop - start - 1])
            values = self._pass(ids[start:stop], pos[start:stop], local)
            result[which] = values[: which.size]
        return result

    @property
    def passes(self) -> PassCache:
        """The built passes this model keeps for reuse."""
        if self._passes is None:
            self._passes = PassCache()
        return self._passes

    def _pass(self, ids: np.ndarray, pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
        cache_key = self.cache.prepare(pos.tolist()) if self.reuse_passes else None
        if cache_key is None:
            values = self._build_once(ids, pos, rows)
        else:
            values = self._reuse(ids, pos, rows, (ids.size, rows.size, cache_key))
        out: np.ndarray = values.reshape(rows.size, -1)
        return out

    def _build_once(self, ids: np.ndarray, pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Build, compute and free one pass (the cache begins it)."""
        with self.backend.new_context() as ctx:
            inputs = ctx.input()
            t_ids = inputs.from_ints(ids, ids.size)
            t_pos = inputs.from_ints(pos, pos.size)
            t_out = inputs.from_ints(rows, rows.size)
            self.cache.begin(ctx, pos.tolist())
            logits = self.build(ctx, t_ids, t_pos, t_out)
            ctx.forward(logits).compute(logits)
            return _floats(logits)

    def _reuse(
        self, ids: np.ndarray, pos: np.ndarray, rows: np.ndarray, key: tuple[int, int, object]
    ) -> np.ndarray:
        """Run the kept pass of ``key`` with new inputs, or build (and keep) it (cache prepared)."""
        passes = self.passes
        built = passes.get(key)
        if built is not None:
            host = [ids.astype(np.int32), pos.astype(np.int32), rows.astype(np.int32)]
            return _floats(built.run([*host, *self.cache.inputs()]))
        ctx = self.backend.new_context()
        try:
            inputs = ctx.input()
            t_ids = inputs.from_ints(ids, ids.size)
            t_pos = inputs.from_ints(pos, pos.size)
            t_out = inputs.from_ints(rows, rows.size)
            bound = self.cache.bind(ctx)
            logits = self.build(ctx, t_ids, t_pos, t_out)
            ctx.forward(logits)
            built = BuiltPass(ctx, logits, [t_ids, t_pos, t_out, *bound])
            values = _floats(built.run())
        except BaseException:
            ctx.close()
            raise
        if not passes.put(key, built):
            built.close()
        return values

    def reset(self) -> None:
        """Forget every cached position."""
        self.cache.reset()

    def close(self) -> None:
        """Free the kept passes and the KV cache."""
        if self._passes is not None:
            self._passes.clear()
        self.cache.close()


def _floats(logits: Tensor) -> np.ndarray:
    """Return the computed ``logits`` as float32 (``Tensor.floats`` returns a new array, which
    the caller owns)."""
    values = logits.floats()
    if values is None:  # pragma: no cover - compute always fills the output
        msg = "the logits were not computed"
        raise ShapeError(msg, op="forward")
    return values
