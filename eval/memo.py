"""Content-keyed memo for work that several metrics repeat on the same clip.

The suite runs about ten metrics on every clip: five of them track the same objects
(:func:`eval.tracking.track_colors`) and three compute the same optical flow between the same two frames
(:func:`eval.temporal.farneback_flow`), which was half of the scoring time. A :class:`Memo` keys each result
by a hash of its inputs' bytes (:func:`content_key`), so a copy of a clip hits and a clip changed in place
misses; what it returns is read-only, so a metric that wrote into a shared result would fail loudly instead
of changing the next metric's input. Only the last ``maxsize`` results are kept.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def content_key(*parts: Any) -> bytes:
    """A 16-byte hash of ``parts``: arrays by shape, dtype and bytes, anything else by ``repr``."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.shape}{a.dtype.str}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.digest()


def read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class Memo:
    """The last ``maxsize`` results of a pure function, by :func:`content_key` of its inputs."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize, self.hits, self.misses = maxsize, 0, 0
        self._values: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, make: Callable[[], T]) -> T:
        """The value stored under ``key``, else ``make()`` (stored)."""
        with self._lock:
            if key in self._values:
                self.hits += 1
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self.misses += 1
            self._values[key] = value
            while len(self._values) > self.maxsize:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.hits = self.misses = 0
