"""torch's private oneDNN ops, the one place kf uses them, with a fallback that gives the same numbers.

``torch.ops.mkldnn._convolution_pointwise`` (a convolution + ReLU in one kernel, as inductor uses it) and
``torch._C._nn.mkldnn_reorder_conv2d_weight`` (the weight reordered once into oneDNN's layout) are not public
API: a torch release may rename them or change their signature. So:

- :func:`available` checks every op used here (not only the first), once, with a tiny call;
- :func:`bound_conv_relu` falls back to ``conv2d`` + ReLU when the fast call fails, and switches the fast path
  off for the rest of the process (one warning), instead of raising in the middle of a prediction;
- :func:`disabled` turns the fast path off (tests check the fallback gives the same outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

_state: dict[str, bool | None] = {"works": None, "disabled": False}


def _op(namespace: object, name: str) -> Callable[..., Tensor] | None:
    try:
        return getattr(namespace, name, None)
    except (RuntimeError, AttributeError):  # torch.ops namespaces raise on unknown names in some releases
        return None


def _pointwise() -> Callable[..., Tensor] | None:
    return _op(torch.ops.mkldnn, "_convolution_pointwise")


def _reorder() -> Callable[..., Tensor] | None:
    return _op(torch._C._nn, "mkldnn_reorder_conv2d_weight")


def pack_weight(conv: nn.Conv2d) -> Tensor:
    """oneDNN's layout of this convolution's weight, reordered once (a batch-1 hint serves every batch)."""
    shape = [1, conv.in_channels, 16, 16]
    return _reorder()(conv.weight.detach().to_mkldnn(), list(conv.padding), list(conv.stride), list(conv.dilation),
                      conv.groups, shape)


def _fast_conv_relu(conv: nn.Conv2d, x: Tensor, packed: Tensor) -> Tensor:
    return _pointwise()(x, packed, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                        conv.groups, "relu", [], "")


def plain_conv_relu(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """The public path: the same function as the fused kernel (up to float rounding)."""
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups).relu_()


def _smoke_test() -> bool:
    """Both ops, on a tiny grouped convolution, against the public path."""
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2).eval()
    x = torch.rand(1, 4, 8, 8)
    with torch.no_grad():
        try:
            fast = _fast_conv_relu(conv, x, pack_weight(conv))
        except Exception as error:  # a changed signature, a missing kernel: any failure means "not here"
            log.debug("oneDNN fast path unavailable: %s", error)
            return False
        return bool(torch.allclose(fast, plain_conv_relu(conv, x), atol=1e-5))


def available() -> bool:
    """Whether the fused oneDNN path can run here: oneDNN built in, both private ops present and working."""
    if _state["disabled"]:
        return False
    if _state["works"] is None:
        _state["works"] = (torch.backends.mkldnn.is_available() and _pointwise() is not None
                           and _reorder() is not None and _smoke_test())
    return bool(_state["works"])


def bound_conv_relu(convs: Sequence[nn.Conv2d]) -> Callable[[Tensor], Tensor]:
    """ReLU(conv(.)) of each convolution in turn, as oneDNN kernels bound once to their reordered weights and
    arguments: at batch 1 the Python around each call (the op looked up, the arguments listed, the checks) cost
    as much as the kernels of a small TSN stack. On any failure of the private op, the public path from the input
    again, and the fast path off from then on (one warning)."""
    op = _pointwise()
    calls = [(pack_weight(conv), conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
              "relu", [], "") for conv in convs]

    def run(x: Tensor) -> Tensor:
        if available():
            try:
                h = x
                for args in calls:
                    h = op(h, *args)
                return h
            except Exception as error:  # never let a private op's change break a prediction
                _state["works"] = False
                log.warning("torch's oneDNN convolution failed (%s); using conv2d from now on", error)
        for conv in convs:
            x = plain_conv_relu(conv, x)
        return x

    return run


@contextmanager
def disabled() -> Iterator[None]:
    """The fast path off inside the block (the fallback's outputs can then be compared with it)."""
    before = _state["disabled"]
    _state["disabled"] = True
    try:
        yield
    finally:
        _state["disabled"] = before


def reset() -> None:
    """Forget the result of the availability check (tests that break an op on purpose call it after)."""
    _state["works"] = None
