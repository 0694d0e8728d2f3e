"""Feature maps in the layouts timm backbones pass between their ops, seen as ``[N, C, h, w]``.

tdnzoo's temporal layers work on per-frame maps ``[N, C, h, w]``. Backbones also hand maps around
channels-last (``[N, h, w, C]``: Swin, MaxViT, MambaOut, ...) or as token sequences (``[N, L, C]``:
ViT, PVT, ...), where the sequence may start with class / register tokens ahead of the ``h x w``
grid of patch tokens. :class:`MapLayout` converts such a tensor to the grid ``[N, C, h, w]`` and
back. Prefix tokens are set aside and returned unchanged: the temporal modules act on the spatial
grid only (a shift or a temporal difference of a class token has no spatial position).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["MapLayout", "detect_layout", "token_grid"]


def token_grid(num_tokens: int, reference: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``num_tokens`` patch tokens.

    The construction-time grid ``reference`` if it fits, else the grid with its aspect ratio (a
    square for a square reference), as a token sequence does not carry its own shape.

    Raises:
        ValueError: no grid of that aspect ratio holds ``num_tokens`` tokens.
    """
    h0, w0 = reference
    if num_tokens == h0 * w0:
        return reference
    w = max(1, round(math.sqrt(num_tokens * w0 / h0)))
    h = num_tokens // w
    if h * w != num_tokens:
        raise ValueError(
            f"cannot tell the grid of {num_tokens} tokens: the model was built on a {h0}x{w0} grid and "
            f"no grid of that aspect ratio has {num_tokens} cells"
        )
    return h, w


@dataclass(frozen=True)
class MapLayout:
    """How one tensor holds a stack of per-frame maps.

    Attributes:
        kind: ``'nchw'``, ``'nhwc'`` or ``'nlc'`` (tokens).
        channels: ``C``.
        grid: ``(h, w)`` at construction (for tokens, the grid whose shape later calls reuse).
        prefix: tokens ahead of the grid (class, register, distillation tokens), ``'nlc'`` only.
    """

    kind: str
    channels: int
    grid: tuple[int, int]
    prefix: int = 0

    def to_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` as ``[N, C, h, w]`` (a view where possible) and its prefix tokens (or ``None``)."""
        if self.kind == "nchw":
            return x, None
        if self.kind == "nhwc":
            return x.permute(0, 3, 1, 2), None
        n, length, c = x.shape
        prefix = x[:, : self.prefix] if self.prefix else None
        h, w = token_grid(length - self.prefix, self.grid)
        return x[:, self.prefix :].transpose(1, 2).reshape(n, c, h, w), prefix

    def from_maps(self, maps: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """The inverse of :meth:`to_maps`, contiguous in this layout (as the backbone's next op expects)."""
        if self.kind == "nchw":
            return maps
        if self.kind == "nhwc":
            return maps.permute(0, 2, 3, 1).contiguous()
        tokens = maps.flatten(2).transpose(1, 2)
        if prefix is not None:
            return torch.cat((prefix, tokens), dim=1)
        return tokens.contiguous()

    def describe(self) -> str:
        extra = f", {self.prefix} prefix tokens" if self.prefix else ""
        return f"{self.kind} {self.channels}x{self.grid[0]}x{self.grid[1]}{extra}"


def detect_layout(t: torch.Tensor | None, batch: int, size: int, prefix_tokens: int = 0) -> MapLayout | None:
    """The layout of ``t``, a tensor seen in a dry run on ``batch`` square frames of ``size`` pixels, or ``None``.

    A map must keep the batch (windows, heads or a flattened batch are not per-frame maps) and have
    a square grid no larger than the frames (an attention matrix is not a map), as the dry run's
    frames are square. ``[N, a, a, a]`` reads as channels-first.
    """
    if t is None or t.shape[0] != batch or not t.is_floating_point():
        return None
    if t.dim() == 4:
        _, a, b, c = t.shape
        if b == c and b <= size:
            return MapLayout("nchw", a, (b, c))
        if a == b and a <= size:
            return MapLayout("nhwc", c, (a, b))
        return None
    if t.dim() == 3:
        _, length, c = t.shape
        for prefix in dict.fromkeys((prefix_tokens, 0)):
            side = math.isqrt(max(length - prefix, 0))
            if 0 < side <= size and side * side == length - prefix:
                return MapLayout("nlc", c, (side, side), prefix)
    return None
