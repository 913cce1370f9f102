"""Length-sorted batching: encode texts of similar length together so each batch pads to little.

Padding a batch to its longest text costs compute on every pad token; with texts from 10 to
256 tokens in input order, most of a batch can be padding. sentence-transformers' ``encode``
already sorts by length inside a call (character count as a proxy for tokens, longest first)
and pads per batch; the tunewise paths that tokenize batches themselves (classifier prediction,
the linear-probe baseline, the head feature cache) sort the same way with these helpers and put
the results back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def length_order(items: Sequence[Any]) -> list[int]:
    """Indices of ``items``, longest first (``len`` of a string; other items keep their order).

    The sort is stable, so equal lengths keep input order and the result is deterministic.
    """
    return sorted(range(len(items)), key=lambda i: -len(items[i]) if isinstance(items[i], str) else 0)


def in_order(items: Sequence[T], order: Sequence[int]) -> list[T]:
    """``items`` rearranged by ``order`` (what gets encoded)."""
    return [items[i] for i in order]


def restore_order(values: Sequence[T], order: Sequence[int]) -> list[T]:
    """Results computed in ``order`` put back in input order: the inverse of :func:`in_order`."""
    out: list[Any] = [None] * len(order)
    for value, i in zip(values, order):
        out[i] = value
    return out


def inverse(order: Sequence[int]) -> list[int]:
    """The permutation that undoes ``order`` (for tensors: ``rows[inverse(order)]``)."""
    out = [0] * len(order)
    for position, i in enumerate(order):
        out[i] = position
    return out
