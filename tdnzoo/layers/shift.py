"""Temporal shift (TSM) and the learnable temporal convolution that TDN initialises as a shift.

Both act on per-frame feature maps ``[B*T, C, H, W]`` (segment-major) and need ``num_segments``
to see the time axis. Channels ``[0, fold)`` look one segment ahead, ``[fold, 2*fold)`` one
segment back, the rest stay, with ``fold = C // fold_div`` (official TSM and TDN semantics,
``docs/design.md`` section 2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

__all__ = ["TemporalConv", "TemporalShift", "next_segment", "pad_segments", "previous_segment", "shift_kernel", "split_segments"]


@register_notrace_function  # a leaf for timm's feature-extraction tracer too
def split_segments(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``[B*T, ...]`` -> ``[B, T, ...]``; a ``ValueError`` when the batch is not a multiple of ``T``."""
    if x.shape[0] % num_segments != 0:
        raise ValueError(f"expected a batch of B*{num_segments} frames (num_segments={num_segments}), got {x.shape[0]}")
    return x.unflatten(0, (x.shape[0] // num_segments, num_segments))


# torch.fx calls the shape check as an opaque leaf (it branches on the shape). fx wraps a name in
# the globals of the module that asks, so each module using the function asks for itself.
torch.fx.wrap("split_segments")


def pad_segments(x5: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Zero segments added to ``[B, T', C, H, W]`` along time: ``before`` ahead, ``after`` behind."""
    return F.pad(x5, (0, 0, 0, 0, 0, 0, before, after))


def next_segment(x5: torch.Tensor) -> torch.Tensor:
    """``x[t+1]`` at every ``t`` of ``[B, T, ...]``, zero after the last segment."""
    return pad_segments(x5[:, 1:], 0, 1)


def previous_segment(x5: torch.Tensor) -> torch.Tensor:
    """``x[t-1]`` at every ``t`` of ``[B, T, ...]``, zero before the first segment."""
    return pad_segments(x5[:, :-1], 1, 0)


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
        x5 = split_segments(x, self.num_segments)
        fold = x5.shape[2] // self.fold_div
        ahead = next_segment(x5[:, :, :fold])  # channels [0, fold) take x[t+1]
        back = previous_segment(x5[:, :, fold : 2 * fold])  # channels [fold, 2*fold) take x[t-1]
        return torch.cat((ahead, back, x5[:, :, 2 * fold :]), dim=2).flatten(0, 1)

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
    ``Conv1d`` computes on ``[B*H*W, C, T]``; written on ``[B, T, C, H, W]`` it needs no permutes.

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
        x5 = split_segments(x, self.num_segments)
        # One contiguous row of C weights per tap: compiled kernels load each tap as a vector.
        taps = self.weight.to(x.dtype).squeeze(1).t().contiguous().view(3, 1, 1, self.channels, 1, 1)
        w0, w1, w2 = taps[0], taps[1], taps[2]
        out = w0 * previous_segment(x5) + w1 * x5 + w2 * next_segment(x5)
        return out.flatten(0, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, num_segments={self.num_segments}, fold_div={self.fold_div}"
