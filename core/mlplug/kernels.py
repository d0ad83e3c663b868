"""Helpers every backend plugin's kernel table uses: the ``@implements`` registration.

A plugin keeps its own table (``KERNELS: dict[str, kernel]``, read by its Backend) and makes
its decorator with :func:`implementer`::

    KERNELS: dict[str, Callable[..., Any]] = {}
    implements = implementer(KERNELS)

    @implements("add", "sub")
    def binary(ctx, t): ...

A backend that records more per kernel (ggml: the library functions it needs) wraps
:func:`register` in a decorator of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TypeVar

from .ops import PRIMITIVES

__all__ = ["implementer", "register"]

K = TypeVar("K", bound=Callable[..., Any])


def register(table: MutableMapping[str, K], names: Iterable[str], fn: K) -> None:
    """Put ``fn`` into ``table`` as the kernel of each primitive op in ``names``.

    :raises KeyError: a name is not a primitive op of :mod:`mlplug.ops` (checked before
        anything is registered).
    """
    names = tuple(names)
    for name in names:
        if name not in PRIMITIVES:
            msg = f"{name!r} is not a primitive op of mlplug.ops"
            raise KeyError(msg)
    for name in names:
        table[name] = fn


def implementer(table: MutableMapping[str, K]) -> Callable[..., Callable[[K], K]]:
    """Return an ``implements(*names)`` decorator that registers kernels into ``table``.

    :param table: the plugin's kernel table (op name -> kernel).
    :returns: ``implements``; ``@implements("add", "sub")`` registers the decorated function
        for both ops and returns it unchanged.
    """

    def implements(*names: str) -> Callable[[K], K]:
        """Register the decorated function as the kernel of the primitive ops ``names``."""

        def deco(fn: K) -> K:
            register(table, names, fn)
            return fn

        return deco

    return implements
