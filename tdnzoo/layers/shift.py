"""Temporal shift (TSM) and the learnable temporal convolution that TDN initialises as a shift.

Both act on per-frame feature maps ``[B*T, C, H, W]`` (segment-major) and need ``num_segments``
to see the time axis. Channels ``[0, fold)`` look one segment ahead, ``[fold, 2*fold)`` one
segment back, the rest stay, with ``fold = C // fold_div`` (official TSM and TDN semantics,
``docs/design.md`` section 2).

The neighbouring segments are read by shifting along the batch axis and zeroing across clip edges
rather than through a ``[B, T, C, H, W]`` view: every op stays 4-D, so a compiled model keeps the
convolutions' memory layout (channels-last) instead of copying each map through a 5-D buffer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

__all__ = [
    "TemporalConv", "TemporalShift", "next_segment", "previous_segment", "shift_frames", "shift_kernel",
    "split_segments", "within_clip",
]


@register_notrace_function  # a leaf for timm's feature-extraction tracer too
def split_segments(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``[B*T, ...]`` -> ``[B, T, ...]``; a ``ValueError`` when the batch is not a multiple of ``T``."""
    if x.shape[0] % num_segments != 0:
        raise ValueError(f"expected a batch of B*{num_segments} frames (num_segments={num_segments}), got {x.shape[0]}")
    return x.unflatten(0, (x.shape[0] // num_segments, num_segments))


# torch.fx calls the shape check as an opaque leaf (it branches on the shape). fx wraps a name in
# the globals of the module that asks, so each module using the function asks for itself.
torch.fx.wrap("split_segments")


def shift_frames(x: torch.Tensor, offset: int) -> torch.Tensor:
    """``x[n + offset]`` at every frame ``n`` of ``[N, ...]``, zero past either end of the batch.

    The shift crosses clip boundaries; :func:`within_clip` zeroes what came from another clip.
    """
    pad = [0, 0] * (x.dim() - 1)
    if offset > 0:
        return F.pad(x[offset:], pad + [0, offset])
    return F.pad(x[: x.shape[0] + offset], pad + [-offset, 0])


def within_clip(x: torch.Tensor, num_segments: int, offset: int) -> torch.Tensor:
    """``x`` at the frames of ``[B*T, ...]`` whose segment ``t + offset`` lies in their clip, zero elsewhere.

    Zeroed by selection, so nothing of a neighbouring clip (not even inf or nan) gets through.
    A ``ValueError`` when the batch is not a multiple of ``num_segments``.
    """
    split_segments(x, num_segments)  # shape check
    t = torch.arange(x.shape[0], device=x.device) % num_segments
    outside = ((t + offset < 0) | (t + offset >= num_segments)).view([-1] + [1] * (x.dim() - 1))
    return torch.where(outside, 0.0, x)


def next_segment(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``x[t+1]`` at every segment ``t`` of ``[B*T, ...]``, zero after the last segment of each clip."""
    return within_clip(shift_frames(x, 1), num_segments, 1)


def previous_segment(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``x[t-1]`` at every segment ``t`` of ``[B*T, ...]``, zero before the first segment of each clip."""
    return within_clip(shift_frames(x, -1), num_segments, -1)


class TemporalShift(nn.Module):
    """Zero-padded temporal shift of a fraction of the channels (TSM, Lin et al. 2019, official
    ``TemporalShift.shift``).

    Args:
        num_segments: segments per clip; the batch dimension holds ``B * num_segments`` frames.
        fold_div: ``1 / fold_div`` of the channels shift each way (official: 8).
    """

    def __init__(self, num_segments: int, fold_div: int = 8) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = x.shape[1] // self.fold_div
        ahead = next_segment(x[:, :fold], self.num_segments)  # channels [0, fold) take x[t+1]
        back = previous_segment(x[:, fold : 2 * fold], self.num_segments)  # channels [fold, 2*fold) take x[t-1]
        return torch.cat((ahead, back, x[:, 2 * fold :]), dim=1)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"


def shift_kernel(channels: int, fold_div: int = 8) -> torch.Tensor:
    """The ``[C, 1, 3]`` depthwise temporal kernel that reproduces :class:`TemporalShift`."""
    fold = channels // fold_div
    weight = torch.zeros(channels, 1, 3)
    weight[:fold, 0, 2] = 1.0  # look ahead: out[t] = x[t+1]
    weight[fold : 2 * fold, 0, 0] = 1.0  # look back: out[t] = x[t-1]
    weight[2 * fold :, 0, 1] = 1.0  # identity
    return weight


class TemporalConv(nn.Module):
    """Learnable depthwise temporal convolution, kernel 3, zero padding, no bias (official TDN
    ``ShiftModule``), initialised to the shift above so that at init it equals :class:`TemporalShift`.

    ``out[t] = w0 * x[t-1] + w1 * x[t] + w2 * x[t+1]``, the cross-correlation the official
    ``Conv1d`` computes on ``[B*H*W, C, T]``; written with :func:`previous_segment` and
    :func:`next_segment` on the per-frame maps it needs no permutes.

    Args:
        channels: channels ``C``.
        num_segments: segments per clip.
        fold_div: the initial shift moves ``1 / fold_div`` of the channels each way.
    """

    def __init__(self, channels: int, num_segments: int, fold_div: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.weight = nn.Parameter(shift_kernel(channels, fold_div))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One contiguous row of C weights per tap: compiled kernels load each tap as a vector.
        taps = self.weight.to(x.dtype).squeeze(1).t().contiguous().view(3, 1, self.channels, 1, 1)
        w0, w1, w2 = taps[0], taps[1], taps[2]
        return w0 * previous_segment(x, self.num_segments) + w1 * x + w2 * next_segment(x, self.num_segments)

    def extra_repr(self) -> str:
        return f"{self.channels}, num_segments={self.num_segments}, fold_div={self.fold_div}"
