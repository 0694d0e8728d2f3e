"""Optimizers and per-iteration learning-rate schedules (step or cosine, with linear warm-up)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["LrFactor", "build_optimizer", "build_scheduler", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with ``weight_decay``; biases and norm parameters (1-D tensors) without.

    As the official TSN/TSM policies (``decay_mult = 0`` for biases and BatchNorm).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, *, name: str = "sgd", lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """SGD with momentum (official) or AdamW, without weight decay on biases and norms.

    Example:
        >>> opt = build_optimizer(model, name="sgd", lr=0.01, weight_decay=5e-4)
    """
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


class LrFactor:
    """Multiplier of the base lr at an iteration; a plain object so its state goes in ``state_dict``.

    Args:
        schedule: ``'step'`` (times ``decay`` at each milestone) or ``'cosine'`` (half cosine to ``min_factor``).
        total_steps: iterations of the whole run.
        warmup_steps: linear warm-up from ``warmup_factor`` to 1.
        milestones: iterations of the step decays.
    """

    def __init__(
        self,
        schedule: str,
        total_steps: int,
        *,
        warmup_steps: int = 0,
        warmup_factor: float = 0.01,
        milestones: Sequence[int] = (),
        decay: float = 0.1,
        min_factor: float = 0.0,
    ) -> None:
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
        self.schedule = schedule
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.milestones = sorted(int(m) for m in milestones)
        self.decay = float(decay)
        self.min_factor = float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        if self.schedule == "step":
            return self.decay ** sum(step >= m for m in self.milestones)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    epochs: int,
    steps_per_epoch: int,
    lr_steps: Sequence[float] = (),
    decay: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_factor: float = 0.01,
    min_lr: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` stepped once per iteration, as the official code steps its scheduler.

    Args:
        lr_steps: epochs (may be fractional) of the step decays.
        min_lr: the cosine schedule's final learning rate.
    """
    base_lr = optimizer.param_groups[0]["lr"]
    factor = LrFactor(
        schedule,
        epochs * steps_per_epoch,
        warmup_steps=round(warmup_epochs * steps_per_epoch),
        warmup_factor=warmup_factor,
        milestones=[round(e * steps_per_epoch) for e in lr_steps],
        decay=decay,
        min_factor=min_lr / base_lr if base_lr > 0 else 0.0,
    )
    return LambdaLR(optimizer, factor)
