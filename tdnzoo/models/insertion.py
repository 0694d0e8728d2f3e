"""Temporal modules enter a backbone by wrapping one of its ops in place; its forward stays its own.

:class:`TemporalInsert` replaces an op ``op`` (an attribute of some module) and runs the temporal
module right before it, on its input, or right after it, on its output. The backbone still calls
``op`` the way it always did, with whatever extra arguments: the wrapper passes them on. Its two
children are ``temporal`` and ``inner``, so the state dict of ``conv1`` becomes
``conv1.temporal.*`` and ``conv1.inner.*`` (the names tdnzoo's checkpoints use).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .tokens import MapLayout

__all__ = ["TemporalInsert", "replace_module"]

_MISSING = object()


class TemporalInsert(nn.Module):
    """Runs ``temporal`` on the input of ``inner`` (or on its output when ``after``).

    Args:
        temporal: a layer on per-frame maps ``[B*T, C, H, W]`` (shift, L-TDM, temporal conv).
        inner: the backbone's op it was inserted at.
        layout: how that tensor holds its maps when not ``[N, C, H, W]`` (channels-last, tokens).
        after: act on ``inner``'s output instead of its input.
    """

    def __init__(self, temporal: nn.Module, inner: nn.Module, layout: MapLayout | None = None, after: bool = False) -> None:
        super().__init__()
        self.temporal = temporal
        self.inner = inner
        self.layout = None if layout is None or layout.kind == "nchw" else layout
        self.after = after

    def __getattr__(self, name: str) -> Any:
        # A block may read a setting of the op it calls (Hiera reads its attention's ``q_stride``):
        # plain settings of ``inner`` stay readable through the wrapper. Tensors, modules and
        # methods do not (``fuse()`` or a weight must not look like the wrapper's own).
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self._modules.get("inner")
            value = inner.__dict__.get(name, _MISSING) if inner is not None else _MISSING
            if isinstance(value, (bool, int, float, str, tuple, type(None))):
                return value
            raise

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return self.temporal(x)
        maps, prefix = self.layout.to_maps(x)
        return self.layout.from_maps(self.temporal(maps), prefix)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.after:
            return self._temporal(self.inner(x, *args, **kwargs))
        return self.inner(self._temporal(x), *args, **kwargs)

    def extra_repr(self) -> str:
        where = "after" if self.after else "before"
        layout = f", layout={self.layout.describe()}" if self.layout is not None else ""
        return f"{where}{layout}"


def replace_module(root: nn.Module, target: nn.Module, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace ``target``, wherever ``root`` holds it, by ``make(target)``; returns the new module.

    Found by identity, so paths that an earlier wrap changed do not matter.

    Raises:
        ValueError: ``target`` is not held by ``root``, or is held in more than one place.
    """
    holders = [(parent, name) for parent in root.modules() for name, child in parent.named_children() if child is target]
    if len(holders) != 1:
        raise ValueError(f"{type(target).__name__} is held in {len(holders)} places, expected one")
    parent, name = holders[0]
    new = make(target)
    setattr(parent, name, new)
    return new
