"""TDN's long-term temporal difference module (L-TDM), the official ``mSEModule``.

Wang et al., "TDN: Temporal Difference Networks for Efficient Action Recognition", CVPR 2021,
section 3.3, and ``docs/design.md`` section 2 for the exact official semantics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .shift import shift_frames, within_clip

__all__ = ["LongTermStack", "LongTermTDM"]


class LongTermTDM(nn.Module):
    """Long-term temporal difference module on per-frame maps ``[B*T, C, H, W]``.

    With the bottleneck ``b = BN(conv_reduce(x))`` at ``C // reduction`` channels and a depthwise
    3x3 ``conv_neighbor``, the differences to the neighbouring segments are
    ``d_f[t] = conv_neighbor(b)[t+1] - b[t]`` (zero at the last segment) and
    ``d_b[t] = conv_neighbor(b)[t-1] - b[t]`` (zero at the first). Each goes through
    :meth:`attention`, and the output is ``x + x * y`` with ``y = (a(d_f) + a(d_b)) / 2``.

    All weights are shared by the two directions, and each BatchNorm is called once per
    direction, as in the official code (in training each direction has its own batch statistics).

    Causal (``causal=True``, for streaming): only the backward difference ``d_b`` is kept and
    ``y = a(d_b)``, the mean over the one branch left. The modules and weights are the same, so an
    offline checkpoint loads.

    Args:
        channels: input and output channels ``C``.
        num_segments: segments per clip.
        reduction: channel reduction of the bottleneck (official: 16; at least one channel is kept).
        causal: look at the previous segment only.
    """

    def __init__(self, channels: int, num_segments: int, reduction: int = 16, causal: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.num_segments = num_segments
        self.reduction = reduction
        self.causal = causal
        hidden = max(1, channels // reduction)
        self.hidden = hidden
        self.conv_reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(hidden)
        self.conv_neighbor = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.conv_pooled = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.bn_pooled = nn.BatchNorm2d(hidden)
        self.conv_full = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.bn_full = nn.BatchNorm2d(hidden)
        self.conv_expand = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(channels)

    def bottleneck(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, conv_neighbor(b))`` of each frame, each ``[N, C//r, H, W]``."""
        b = self.bn_reduce(self.conv_reduce(x))
        return b, self.conv_neighbor(b)

    def differences(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward and backward differences ``(d_f, d_b)``, each ``[B*T, C//r, H, W]``."""
        b, neighbor = self.bottleneck(x)
        return self.difference(b, neighbor, 1), self.difference(b, neighbor, -1)

    def difference(self, b: torch.Tensor, neighbor: torch.Tensor, step: int) -> torch.Tensor:
        """``conv(b)[t+step] - b[t]`` (step 1: forward, -1: backward), zero where the neighbour is missing
        (not ``-b[t]``), as the official padding."""
        return within_clip(shift_frames(neighbor, step) - b, self.num_segments, step)

    def attention(self, d: torch.Tensor) -> torch.Tensor:
        """``sigmoid(BN(conv_expand(mixed))) - 0.5`` for one direction's difference ``d``.

        ``mixed`` weighs three scales equally: ``d`` itself, a 2x2 average-pooled 3x3 conv upsampled
        back (nearest) and a full-resolution 3x3 conv.
        """
        pooled = self.bn_pooled(self.conv_pooled(F.avg_pool2d(d, 2)))
        pooled = F.interpolate(pooled, size=d.shape[-2:])
        full = self.bn_full(self.conv_full(d))
        mixed = d / 3.0 + pooled / 3.0 + full / 3.0
        return torch.sigmoid(self.bn_expand(self.conv_expand(mixed))) - 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return x + x * self.attention(self.difference(*self.bottleneck(x), -1))  # the past only: d_b
        d_forward, d_backward = self.differences(x)
        y = 0.5 * self.attention(d_forward) + 0.5 * self.attention(d_backward)
        return x + x * y

    def fuse(self) -> LongTermTDM:
        """Fold each eval-mode BatchNorm into the convolution before it (same outputs, fewer passes).

        In place; returns ``self``. The BatchNorms become ``nn.Identity``, so the forward reads
        the same. Called by :func:`tdnzoo.fuse_for_inference` and by
        ``timm.utils.reparameterize_model``; a model being trained must not be fused.
        """
        if self.training:
            raise RuntimeError("LongTermTDM.fuse() folds running statistics: call it in eval mode")
        for conv_name, bn_name in (("conv_reduce", "bn_reduce"), ("conv_pooled", "bn_pooled"),
                                   ("conv_full", "bn_full"), ("conv_expand", "bn_expand")):
            bn = getattr(self, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(self, conv_name, fuse_conv_bn_eval(getattr(self, conv_name), bn))
                setattr(self, bn_name, nn.Identity())
        return self

    def extra_repr(self) -> str:
        causal = ", causal=True" if self.causal else ""
        return f"{self.channels}, num_segments={self.num_segments}, reduction={self.reduction}{causal}"


class LongTermStack(nn.Sequential):
    """TDN's insert in a residual block of stages 3-5: an L-TDM (``ltdm``) then a temporal conv
    (``tconv``), either of which may be left out. A plain ``nn.Sequential`` with a name of its own."""
