"""Gradio's per-request cost, one small seam: a new session's component configs built when first read, not all at
its start; the component signatures those configs read, memoised; the queue's analytics summary, recomputed less
often.

Every API call (``/predict`` through ``gradio_client`` or ``/call``) is a new Gradio session, and each new session
builds the config of every component of the app (``state_holder.SessionState``): ``Block.get_config`` calls
``inspect.signature(cls.__init__)`` for each of them. Sampled with py-spy while 4 clients called /predict (2-core
machine under load, 280 requests): building those configs took 27 % of the app process's CPU, and half of that
was ``inspect.signature``, more than the prediction itself (15 %), on the event loop where nothing else runs
meanwhile. With the signatures memoised, a py-spy sample of 16 clients calling /predict still found 15 % of the
app's CPU in ``SessionState.__init__``, and an API call's session never reads those configs (a browser's session
reads a few, when an event updates a component). :func:`build_session_configs_lazily` makes Gradio's state holder
create sessions whose ``config_values`` builds each block's config on first use (the same configs, in the same
order, when read). A function's signature does not change, so ``gradio.blocks`` gets the ``inspect`` module with
``signature`` memoised per callable (anything unhashable, or a call with options, goes to ``inspect`` itself).
:func:`memoise_component_signatures` says False, and changes nothing, when a Gradio release no longer reads
``inspect`` there (``tests/test_app.py`` checks the seam still applies).

After every event, Gradio's queue rebuilds a pandas summary of every event it keeps (up to 10,000) for its
monitoring view: by default on each event (``GRADIO_ANALYTICS_CACHE_FREQUENCY=1``), a cost that grows with the
events kept. Sampled with py-spy while one client called /predict (550 requests): 18 % of the app's busy CPU.
:func:`bound_queue_analytics` sets Gradio's own environment settings, unless the user set them, before the queue
exists: the summary every 100 events, over the last 1,000.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import gradio.blocks
import gradio.state_holder


@functools.lru_cache(maxsize=2048)
def _signature_of(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def signature(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> inspect.Signature:
    """``inspect.signature``, memoised for plain calls on hashable callables."""
    if args or kwargs:
        return inspect.signature(fn, *args, **kwargs)
    try:
        return _signature_of(fn)
    except TypeError:  # an unhashable callable
        return inspect.signature(fn)


class _MemoisedInspect:
    """The ``inspect`` module, but for ``signature``."""

    signature = staticmethod(signature)

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


def memoise_component_signatures() -> bool:
    """Give ``gradio.blocks`` the memoised ``inspect`` (once); False where it does not read ``inspect`` any more."""
    current = getattr(gradio.blocks, "inspect", None)
    if isinstance(current, _MemoisedInspect):
        return True
    if current is not inspect:
        return False
    gradio.blocks.inspect = _MemoisedInspect()
    return True


QUEUE_ANALYTICS = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "100", "GRADIO_ANALYTICS_MAX_EVENTS": "1000"}


def bound_queue_analytics() -> dict[str, str]:
    """Gradio's analytics settings for the queue made next (``Blocks.queue``); a value the user set wins."""
    for name, value in QUEUE_ANALYTICS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in QUEUE_ANALYTICS}


class LazyConfigs(MutableMapping):
    """``SessionState.config_values``: block id -> its config, each built from the block it had at the session's start
    when first read."""

    def __init__(self, blocks_config: Any, blocks: dict[int, Any]) -> None:
        self._blocks_config = blocks_config
        self._pending = dict(blocks)  # id -> block, config not built yet
        self._built: dict[int, dict] = {}
        self._order = list(blocks)  # Gradio's order: its blocks', then ids set later
        self._lock = threading.Lock()  # a session's events may run in several threads at once

    def __getitem__(self, key: int) -> dict:
        with self._lock:
            if key in self._pending:
                self._built[key] = self._blocks_config.config_for_block(key, [], self._pending.pop(key))
            return self._built[key]

    def __setitem__(self, key: int, value: dict) -> None:
        with self._lock:
            if key not in self._pending and key not in self._built:
                self._order.append(key)
            self._pending.pop(key, None)
            self._built[key] = value

    def __delitem__(self, key: int) -> None:
        with self._lock:
            if key not in self._pending and key not in self._built:
                raise KeyError(key)
            self._pending.pop(key, None)
            self._built.pop(key, None)
            self._order.remove(key)

    def __contains__(self, key: object) -> bool:
        return key in self._pending or key in self._built

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)


class _WithoutBlocks:
    """``blocks`` as ``SessionState.__init__`` reads it, with no block to build a config for."""

    def __init__(self, blocks: Any) -> None:
        self._real = blocks
        self.blocks: dict[int, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class LazySessionState(gradio.state_holder.SessionState):
    """Gradio's session, every attribute set by Gradio's own ``__init__``, but ``config_values`` built on first use."""

    def __init__(self, blocks: Any) -> None:
        super().__init__(_WithoutBlocks(blocks))
        if self.config_values:  # a Gradio that builds configs some other way: keep its own
            return
        ours = {key: block for key, block in self.blocks_config.blocks.items() if key in blocks.blocks}
        self.config_values = LazyConfigs(self.blocks_config, ours)


def build_session_configs_lazily() -> bool:
    """Make Gradio's state holder create :class:`LazySessionState` sessions (once); False where this Gradio has no
    ``state_holder.SessionState`` to replace."""
    current = getattr(gradio.state_holder, "SessionState", None)
    if current is LazySessionState:
        return True
    if current is not LazySessionState.__mro__[1]:
        return False
    gradio.state_holder.SessionState = LazySessionState
    return True
