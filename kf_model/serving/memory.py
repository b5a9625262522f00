"""What the app's caches may hold, in bytes: assembled networks per bank, and Hub banks all together.

A count alone does not bound memory: one hostile Hub bank (a 50 MB manifest, a 200 M-parameter CKN) weighs as
much as a hundred small ones, and every revision of a repo is a bank of its own. So both caches are bounded by
bytes (and by a count), and drop their least recently used entries first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from kf_model.utils import module_bytes

MAX_NETWORKS = 64  # assembled networks cached per bank (2^n task subsets exist)
MAX_NETWORK_BYTES = 32 * 2**20  # ... and their bytes: ~25 of the bundled banks' (1.2-1.6 MB each), one of a
# ResNet-18-sized bank's; a network not cached is rebuilt on demand (milliseconds for the bundled banks)
MAX_HUB_BANKS = 8  # Hub banks kept in memory, each revision counting as one
MAX_HUB_BYTES = 1024 * 2**20  # ... and their bytes: parsed manifests, loaded factors, cached networks
MAX_SESSIONS = 1000  # Gradio sessions kept in memory (launch's state_session_capacity, default 10,000): each API
# call is a new session; built eagerly, each held the config of every component of the app, ~0.2 MB here (measured:
# RSS +323 MB over 1,500 /predict calls); now built on first use (ui.gradio_sessions), an API call's session holds
# almost nothing, a browser's the configs its events updated; an active visitor's session stays, as it moves to the
# front on each event
MANIFEST_MEMORY_FACTOR = 16  # parsed JSON (dicts, str objects) weighs ~10-15x its text (measured: 52.8 MB -> 0.69 GB)

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


def manifest_memory(manifest_bytes: int) -> int:
    """What a parsed ``factors.json`` of ``manifest_bytes`` bytes costs in memory (an upper estimate)."""
    return MANIFEST_MEMORY_FACTOR * max(int(manifest_bytes), 0)


class BoundedCache(Generic[Key, Value]):
    """A least-recently-used cache bounded by a count and by bytes (each value weighed once, when added).

    The newest entry always stays, even alone over the byte budget: the request that built it gets its answer.
    Thread-safe.
    """

    def __init__(self, max_items: int, max_bytes: int, weigh: Callable[[Value], int]) -> None:
        if max_items < 1 or max_bytes < 0:
            raise ValueError(f"BoundedCache needs max_items >= 1 and max_bytes >= 0, got {max_items}, {max_bytes}")
        self.max_items, self.max_bytes, self._weigh = max_items, max_bytes, weigh
        self._items: OrderedDict[Key, tuple[Value, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Key) -> Value | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def setdefault(self, key: Key, value: Value) -> Value:
        """The cached value of ``key`` if another thread added one meanwhile, else ``value`` (now cached)."""
        weight = self._weigh(value)  # outside the lock: may walk a network's tensors
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            self._items[key] = (value, weight)
            self._bytes += weight
            while len(self._items) > 1 and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


def network_cache(max_items: int = MAX_NETWORKS, max_bytes: int = MAX_NETWORK_BYTES) -> BoundedCache:
    """The cache of one bank's assembled networks, weighed by their tensors."""
    return BoundedCache(max_items, max_bytes, module_bytes)


def banks_to_drop(weights: OrderedDict[str, int], max_items: int, max_bytes: int) -> list[str]:
    """Keys to drop, least recently used first (``weights`` is oldest first), until at most ``max_items`` remain
    and their bytes fit ``max_bytes``; the newest always stays."""
    total = sum(weights.values())
    dropped: list[str] = []
    for key, weight in weights.items():
        if len(weights) - len(dropped) <= 1 or (len(weights) - len(dropped) <= max_items and total <= max_bytes):
            break
        dropped.append(key)
        total -= weight
    return dropped

