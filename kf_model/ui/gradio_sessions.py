"""Gradio's per-request cost, one small seam: the component signatures a new session's configs read, memoised;
and the queue's analytics summary, recomputed less often.

Every API call (``/predict`` through ``gradio_client`` or ``/call``) is a new Gradio session, and each new session
builds the config of every component of the app (``state_holder.SessionState``): ``Block.get_config`` calls
``inspect.signature(cls.__init__)`` for each of them. Sampled with py-spy while 4 clients called /predict (2-core
machine under load, 280 requests): building those configs took 27 % of the app process's CPU, and half of that
was ``inspect.signature``, more than the prediction itself (15 %), on the event loop where nothing else runs
meanwhile. A function's signature does not change, so ``gradio.blocks`` gets the ``inspect`` module with
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
from collections.abc import Callable
from typing import Any

import gradio.blocks


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
