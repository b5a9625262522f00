"""Optimizer and learning-rate schedule of every run."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from kf_model.training.config import OptimizerConfig, ScheduleConfig


def build_optimizer(modules: Sequence[nn.Module], config: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and norm layers (1-d tensors)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 or name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def total_steps(schedule: ScheduleConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of a run: ``max_steps`` or ``epochs`` (one by default), whichever comes first."""
    steps_per_epoch = max(batches_per_epoch // schedule.gradient_accumulation_steps, 1)
    candidates = []
    if schedule.max_steps is not None:
        candidates.append(schedule.max_steps)
    if schedule.epochs is not None or schedule.max_steps is None:
        candidates.append(math.ceil((schedule.epochs if schedule.epochs is not None else 1.0) * steps_per_epoch))
    return max(min(candidates), 1)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak LR, then cosine decay to ``min_ratio`` of it at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
