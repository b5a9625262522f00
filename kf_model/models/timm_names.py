"""timm architectures by registered name: the name checked (with a hint), the widths of the last 3 stages.

Shared by ``models.backbones`` (a ``timm:<name>`` trunk) and ``teachers.timm_teacher``; timm is imported
only when a timm name is used.
"""

from __future__ import annotations

import difflib

from torch import nn

from kf_model.errors import UnknownNameError


def check_timm_name(name: str) -> str:
    """A registered timm architecture (an optional ``.tag`` is dropped: weights never come from timm here)."""
    import timm

    base = name.split(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise UnknownNameError(f"unknown timm model {name!r}{hint}")
    return base


def stage_widths(model: nn.Module) -> list[int]:
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_intermediates"):
        raise UnknownNameError(f"timm model {type(model).__name__} has no feature API (forward_intermediates); "
                               "choose another architecture")
    return [int(stage["num_chs"]) for stage in info[-3:]]
