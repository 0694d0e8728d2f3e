"""Temporal difference modules of TDN (Wang et al., CVPR 2021): S-TDM and L-TDM.

Semantics follow the official MCG-NJU/TDN code exactly (see ``DESIGN.md`` §2); the
implementation batches what the official code runs twice (the forward and backward
differences share their weights), which changes no output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .shift import _split_time

__all__ = ["LongTermTDM", "ShortTermTDM", "frame_differences", "fuse_difference"]


def _bn_per_direction(bn: nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
    """BatchNorm on ``[fwd; bwd]`` stacked on the batch dim.

    In eval mode BN is per-element affine, so one call serves both halves. In training the
    official code normalises each direction with its own batch statistics (and updates the
    running statistics twice), so we do exactly that.
    """
    if not bn.training:
        return bn(y)
    forward, backward = y.chunk(2)
    return torch.cat((bn(forward), bn(backward)))


class LongTermTDM(nn.Module):
    """Long-term temporal difference module (official ``mSEModule``).

    Works on ``[B*T, C, H, W]``. With ``b = BN(conv1x1(x))`` at ``C // reduction`` channels and a
    depthwise 3x3 ``conv_neighbor``, the forward difference is
    ``conv_neighbor(b)[t+1] - b[t]`` (zero at the last segment) and the backward one
    ``conv_neighbor(b)[t-1] - b[t]`` (zero at the first). Each passes through three equally
    weighted branches (identity; 2x2 avg-pool, 3x3 conv, BN, nearest upsample; 3x3 conv, BN)
    and a 1x1 conv back to ``C`` with BN; ``sigmoid(.) - 0.5`` of both directions is averaged
    into an attention map ``y`` and the output is ``x + x * y``.

    Args:
        channels: input and output channels ``C``.
        num_segments: segments per clip.
        reduction: channel reduction of the bottleneck (official: 16).
    """

    def __init__(self, channels: int, num_segments: int, reduction: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.num_segments = num_segments
        self.reduction = reduction
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

    def differences(self, x: torch.Tensor) -> torch.Tensor:
        """Forward and backward feature differences stacked on the batch: ``[2*B*T, C//r, H, W]``.

        The first half is ``conv_neighbor(b)[t+1] - b[t]`` (zero at the last segment), the
        second ``conv_neighbor(b)[t-1] - b[t]`` (zero at the first).
        """
        b = self.bn_reduce(self.conv_reduce(x))
        b5 = _split_time(b, self.num_segments)
        nb5 = _split_time(self.conv_neighbor(b), self.num_segments)
        pad_end, pad_start = (0, 0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 1, 0)
        forward = F.pad(nb5[:, 1:] - b5[:, :-1], pad_end)
        backward = F.pad(nb5[:, :-1] - b5[:, 1:], pad_start)
        # Both directions share every weight, so they run as one batch: [forward; backward].
        return torch.cat((forward, backward)).flatten(0, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The map ``y`` in ``x + x * y``, in ``(-0.5, 0.5)``."""
        diff = self.differences(x)
        pooled = _bn_per_direction(self.bn_pooled, self.conv_pooled(F.avg_pool2d(diff, 2)))
        pooled = F.interpolate(pooled, size=diff.shape[-2:])  # nearest, as the official code
        full = _bn_per_direction(self.bn_full, self.conv_full(diff))
        mixed = (1.0 / 3.0) * diff + (1.0 / 3.0) * pooled + (1.0 / 3.0) * full
        gate = torch.sigmoid(_bn_per_direction(self.bn_expand, self.conv_expand(mixed))) - 0.5
        gate_forward, gate_backward = gate.chunk(2)
        return 0.5 * gate_forward + 0.5 * gate_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.attention(x)

    def extra_repr(self) -> str:
        return f"{self.channels}, num_segments={self.num_segments}, reduction={self.reduction}"


def frame_differences(frames: torch.Tensor, frames_per_segment: int) -> torch.Tensor:
    """Differences of consecutive frames within each segment.

    ``[N, F*3, H, W]`` (F frames, RGB last, as the official input) ->
    ``[N, (F-1)*3, H, W]`` stacked difference-major: ``[x2-x1, x3-x2, ...]``.
    """
    n, c, h, w = frames.shape
    if c != 3 * frames_per_segment:
        raise ValueError(
            f"expected {3 * frames_per_segment} channels ({frames_per_segment} RGB frames), got {c}"
        )
    x = frames.view(n, frames_per_segment, 3, h, w)
    return (x[:, 1:] - x[:, :-1]).flatten(1, 2)


def fuse_difference(x: torch.Tensor, diff: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``alpha * x + beta * up(diff)`` with nearest upsampling to ``x``'s size (official fusion)."""
    if diff.shape[-2:] != x.shape[-2:]:
        diff = F.interpolate(diff, size=x.shape[-2:])
    return alpha * x + beta * diff


class ShortTermTDM(nn.Module):
    """Short-term temporal difference module: the difference stream of TDN's early stages.

    Takes the ``frames_per_segment`` RGB frames of each segment stacked on channels,
    ``[B*T, F*3, H, W]``; stacks their ``F-1`` differences, average-pools them 2x2 and runs them
    through its own ``stem`` (a copy of the backbone's stem whose first conv takes ``(F-1)*3``
    channels) and its own copy of the first stage. Returns both feature maps; the model fuses
    them into the RGB stream with :func:`fuse_difference`.

    Args:
        stem: the difference stem, input ``(F-1)*3`` channels.
        stage: the difference stream's first stage.
        num_segments: segments per clip (for the shape check).
        frames_per_segment: consecutive frames per segment (official: 5).
    """

    def __init__(self, stem: nn.Module, stage: nn.Module, num_segments: int, frames_per_segment: int = 5) -> None:
        super().__init__()
        if frames_per_segment < 2:
            raise ValueError(f"S-TDM needs at least 2 frames per segment, got {frames_per_segment}")
        self.num_segments = num_segments
        self.frames_per_segment = frames_per_segment
        self.stem = stem
        self.stage = stage

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _split_time(frames, self.num_segments)  # shape check only
        diff = F.avg_pool2d(frame_differences(frames, self.frames_per_segment), 2)
        stem_out = self.stem(diff)
        return stem_out, self.stage(stem_out)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, frames_per_segment={self.frames_per_segment}"
