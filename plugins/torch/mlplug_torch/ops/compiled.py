"""Decode-step kernels compiled by inductor: the backend's cache of them, and its switch.

A decode step runs the same few operations with the same shapes token after token: every
weight times one activation column (:mod:`.gemv`), and one query's attention over a growing
cache (:mod:`.attention`). Written as one expression each and compiled by inductor, such an
operation becomes one vectorised C++ loop that reads its operands once, instead of a dozen
torch calls that each write an intermediate.

:class:`CompiledKernels` compiles each expression straight through inductor (``make_fx`` +
``torch._inductor.compile``: no dynamo guards per call) the first time a key is asked for,
checks its first result against the expression run eagerly, and keeps it for the backend's
life. A key's shapes are fixed, except where a kernel is compiled ``dynamic`` (attention's
number of keys, which grows every step). If a compilation fails (no C++ compiler, say) or its
check does, every compiled kernel of the backend is turned off after one logged warning and
the eager paths run from then on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Final

import torch

__all__ = ["FUSED_ENV", "FUSED_MIN_BYTES", "CompiledKernels", "Kernel", "fused_from_env"]

_log = logging.getLogger(__name__)

#: Environment variable: ``0`` turns the compiled decode kernels off, ``1`` compiles them for
#: every operand size (default: from :data:`FUSED_MIN_BYTES`).
FUSED_ENV: Final = "MLPLUG_TORCH_FUSED"

#: Operand bytes (a weight, or attention's visible keys and values) from which a decode
#: operation runs compiled by default: below it the eager kernels cost little and a
#: compilation (seconds, once per shape) would not pay.
FUSED_MIN_BYTES: Final = 64 << 10

Kernel = Callable[..., torch.Tensor]


def fused_from_env(value: str | None) -> int | None:
    """The smallest operand (bytes) whose decode kernel is compiled, or None for "off"."""
    text = (value or "").strip().lower()
    if text in ("0", "false", "off", "no"):
        return None
    if text in ("1", "true", "on", "yes", "all"):
        return 0
    return FUSED_MIN_BYTES


class CompiledKernels:
    """The compiled decode kernels of one backend, by key.

    :param min_bytes: the smallest operand (bytes) whose kernel is compiled; None: none is.
    """

    def __init__(self, min_bytes: int | None) -> None:
        self.min_bytes = min_bytes
        self._kernels: dict[Hashable, Kernel | None] = {}
        self._lock = threading.Lock()

    @property
    def on(self) -> bool:
        """Whether any kernel may be compiled (off after a failure, or when turned off)."""
        return self.min_bytes is not None

    def wants(self, nbytes: int) -> bool:
        """Whether an operation whose operands take ``nbytes`` runs compiled."""
        return self.min_bytes is not None and nbytes >= self.min_bytes

    def kernel(
        self,
        key: Hashable,
        expression: Kernel,
        operands: Callable[[], tuple[torch.Tensor, ...]],
        *,
        dynamic: bool = False,
        atol: Callable[..., float] | None = None,
        exact: bool = False,
    ) -> Kernel | None:
        """The kernel of ``expression`` for ``key``, or None where its compilation failed. On
        first use it is compiled for ``operands()`` (called only then; every size symbolic if
        ``dynamic``), and its result on them must match the eager expression's within 1e-4
        relative, or absolute 1e-5 of the largest value, or ``atol(*operands())`` when given.

        With ``exact``, every cast to a narrower float type rounds as it does eagerly
        (inductor's ``emulate_precision_casts``; by default it may keep a fused intermediate
        in float32) and the result must equal the eager one bit for bit (NaN for NaN)."""
        try:
            return self._kernels[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._kernels:
                args = operands()
                self._kernels[key] = self._compile(key, expression, args, dynamic, atol, exact)
        return self._kernels[key]

    def ready(self, key: Hashable) -> Kernel | None:
        """The kernel compiled for ``key`` so far, or None (nothing is compiled here)."""
        return self._kernels.get(key)

    def _compile(
        self,
        key: Hashable,
        expression: Kernel,
        args: tuple[torch.Tensor, ...],
        dynamic: bool,
        atol: Callable[..., float] | None,
        exact: bool = False,
    ) -> Kernel | None:
        """Compile the kernel and check it once against the expression run eagerly. Any
        failure (no C++ compiler, a mismatch) turns every compiled kernel of this backend
        off, with one logged warning: the eager paths are the fallback."""
        from torch._inductor import config as inductor_config
        from torch.fx.experimental.proxy_tensor import make_fx

        _log.info("compiling the decode kernel %s", key)
        try:
            if dynamic:
                # every size its own symbol: without this, sizes equal in ``args`` (a number of
                # keys equal to the head size, say) would share one and be fixed together
                from torch.fx.experimental import _config as fx_config

                with fx_config.patch(use_duck_shape=False):
                    graph = make_fx(expression, tracing_mode="symbolic")(*args)
                inputs = [n.meta["val"] for n in graph.graph.nodes if n.op == "placeholder"]
            else:
                graph = make_fx(expression)(*args)
                inputs = list(args)
            with inductor_config.patch(emulate_precision_casts=exact):
                compiled: Kernel = torch._inductor.compile(graph, inputs)
            _check(compiled(*args), expression(*args), args, atol, exact)
        except Exception as exc:  # any failure means "run eagerly"
            self.min_bytes = None
            _log.warning(
                "torch: compiled decode kernels turned off (%s failed: %s: %s); they run eagerly",
                key,
                type(exc).__name__,
                exc,
            )
            return None
        return compiled

    def compiled_keys(self) -> list[Hashable]:
        """The keys of the kernels compiled so far."""
        return [k for k, v in self._kernels.items() if v is not None]

    def clear(self) -> None:
        """Drop every kernel."""
        self._kernels.clear()

    def __len__(self) -> int:
        """The number of compiled kernels."""
        return sum(k is not None for k in self._kernels.values())


def _check(
    got: torch.Tensor,
    want: torch.Tensor,
    args: tuple[torch.Tensor, ...],
    atol: Callable[..., float] | None,
    exact: bool,
) -> None:
    """Raise ArithmeticError where a compiled result is not the eager one: bit for bit (NaN
    matching NaN) if ``exact``, else within :meth:`CompiledKernels.kernel`'s tolerance."""
    if exact:
        same = got.shape == want.shape and bool(
            ((got == want) | (got.isnan() & want.isnan())).all()
        )
        if not same:
            msg = "the compiled result is not the eager one bit for bit"
            raise ArithmeticError(msg)
        return
    if atol is None:
        gap = 1e-5 * float(want.abs().nan_to_num(0.0, 0.0, 0.0).max()) + 1e-30
    else:
        gap = atol(*args)
    if not torch.allclose(got, want, rtol=1e-4, atol=gap, equal_nan=True):
        gap = float((got - want).abs().nan_to_num(0.0).max())
        msg = f"the compiled result differs from the eager one by up to {gap:.3g}"
        raise ArithmeticError(msg)
