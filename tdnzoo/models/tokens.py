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
from torch import nn

__all__ = ["FromMaps", "MapLayout", "ToMaps", "detect_layout", "token_grid"]


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


def _scales(side: int, alt_side: int, size: int, alt_size: int) -> bool:
    """``side`` at frames of ``size`` becomes ``alt_side`` at ``alt_size`` as a map's grid does: in
    proportion, up to rounding and the few pixels unpadded convs take (Inception). An attention
    matrix over ``L = h * w`` tokens grows with the square of the frame size instead."""
    ratio = alt_size / size
    return alt_side > side and (alt_side - 1) / side <= ratio + 0.5 and (alt_side + 1) / side >= min(ratio, 1.25)


def detect_layout(
    t: torch.Tensor | None,
    batch: int,
    size: int,
    prefix_tokens: int | None = None,
    alt_shape: tuple[int, ...] | None = None,
    alt_size: int | None = None,
) -> MapLayout | None:
    """The layout of ``t``, a tensor seen in a dry run on ``batch`` square frames of ``size`` pixels, or ``None``.

    With ``alt_shape``, the shape of the same tensor in a run on frames of ``alt_size``, the grid
    dimensions are those that follow the frame size, which settles ``[N, 16, 16, 16]``. Without
    it: a map must keep the batch (windows, heads or a flattened batch are not per-frame maps) and
    have a square grid no larger than the frames (an attention matrix is not a map), and
    ``[N, a, a, a]`` reads as channels-first. A token sequence must hold a square grid after
    ``prefix_tokens`` (when the model says how many) or after the fewest of up to 8 that makes one
    (class, register and distillation tokens).
    """
    if t is None or t.shape[0] != batch or not t.is_floating_point():
        return None
    shape = tuple(t.shape)
    known = alt_shape is not None and alt_size is not None and len(alt_shape) == len(shape) and alt_size != size
    varying = {i for i in range(1, len(shape)) if known and shape[i] != alt_shape[i]}
    if t.dim() == 4:
        _, a, b, c = shape
        if known:
            if varying == {2, 3} and b == c and _scales(b, alt_shape[2], size, alt_size):
                return MapLayout("nchw", a, (b, c))
            if varying == {1, 2} and a == b and _scales(a, alt_shape[1], size, alt_size):
                return MapLayout("nhwc", c, (a, b))
            return None
        if b == c and b <= size:
            return MapLayout("nchw", a, (b, c))
        if a == b and a <= size:
            return MapLayout("nhwc", c, (a, b))
        return None
    if t.dim() == 3:
        _, length, c = shape
        if known and varying != {1}:
            return None
        for prefix in range(9) if prefix_tokens is None else dict.fromkeys((prefix_tokens, 0)):
            side = math.isqrt(max(length - prefix, 0))
            # a grid of one token is a class token alone (CaiT's class-attention blocks), not a map
            if not (1 < side <= size and side * side == length - prefix):
                continue
            if known:
                alt_side = math.isqrt(max(alt_shape[1] - prefix, 0))
                if alt_side * alt_side != alt_shape[1] - prefix or not _scales(side, alt_side, size, alt_size):
                    continue
            return MapLayout("nlc", c, (side, side), prefix)
    return None

class ToMaps(nn.Module):
    """Converts a backbone tensor of ``layout`` to ``[N, C, h, w]`` maps (prefix tokens dropped)."""

    def __init__(self, layout: MapLayout) -> None:
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.to_maps(x)[0].contiguous()

    def extra_repr(self) -> str:
        return self.layout.describe()


class FromMaps(nn.Module):
    """Converts ``[N, C, h, w]`` maps to a backbone tensor of ``layout`` (no prefix tokens)."""

    def __init__(self, layout: MapLayout) -> None:
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.from_maps(x)

    def extra_repr(self) -> str:
        return self.layout.describe()
