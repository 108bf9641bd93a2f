"""A bounded, thread-safe LRU cache of decoded chunks, shared by every open volume.

Keys are ``(volume key, chunk index)``; values are numpy arrays of one chunk (edge chunks clipped to
the array). The cache holds at most ``max_bytes`` of chunk data: inserting evicts the least recently
used chunks until the new one fits; a chunk larger than the whole budget is returned but not kept.
``hits``, ``misses`` (one per chunk decoded from the store) and ``bytes`` are counters a test or a
benchmark can read; memory is then bounded by ``max_bytes`` plus the chunks of the current read.

    >>> c = ChunkCache(max_bytes=1000)
    >>> c.get(("a", (0,)), lambda: np.zeros(100, np.uint8)).nbytes, c.misses, c.hits
    (100, 1, 0)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

DEFAULT_BYTES = 256 << 20
"""Default budget of the shared cache (256 MiB)."""


class ChunkCache:
    """LRU map ``key -> chunk`` bounded by the chunks' total ``nbytes``."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached chunk for ``key``, or ``load()`` (counted as a miss) stored for next time."""
        with self._lock:
            chunk = self._items.get(key)
            if chunk is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return chunk
        chunk = load()  # outside the lock: reads of different chunks run in parallel
        chunk.flags.writeable = False
        with self._lock:
            self.misses += 1
            if key not in self._items and chunk.nbytes <= self.max_bytes:
                self._items[key] = chunk
                self.bytes += chunk.nbytes
                while self.bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self.bytes -= old.nbytes
        return chunk

    def clear(self) -> None:
        """Drop every chunk and reset the counters."""
        with self._lock:
            self._items.clear()
            self.bytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


_shared = ChunkCache()


def shared_cache() -> ChunkCache:
    """The process-wide cache that volumes use when none is given."""
    return _shared
