"""Temporal shift (TSM) and the learnable temporal convolution that TDN initialises as a shift.

Both act on per-frame feature maps ``[B*T, C, H, W]`` (segment-major) and need ``num_segments``
to see the time axis. Channels ``[0, fold)`` look one segment ahead, ``[fold, 2*fold)`` one
segment back, the rest stay, with ``fold = C // fold_div`` (official TSM and TDN semantics,
``docs/design.md`` section 2).

Causal variants (``causal=True``) read the past only, so that a model can run on a live stream
one segment at a time (:mod:`tdnzoo.models.streaming`). The shift is TSM's uni-directional
online shift (paper section 3.3; official ``online_demo/mobilenet_v2_tsm.py``): channels
``[0, fold)`` take ``x[t-1]`` (zero at the first segment), the rest stay. The offline shift's
``[0, fold)`` look ahead instead, so an offline checkpoint loads but needs fine-tuning.

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
        causal: TSM's online (uni-directional) shift: only channels ``[0, fold)`` move, from ``x[t-1]``.
    """

    def __init__(self, num_segments: int, fold_div: int = 8, causal: bool = False) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = x.shape[1] // self.fold_div
        if self.causal:  # official online demo: cat((buffer of the previous frame's x[:, :fold]), x[:, fold:])
            return torch.cat((previous_segment(x[:, :fold], self.num_segments), x[:, fold:]), dim=1)
        ahead = next_segment(x[:, :fold], self.num_segments)  # channels [0, fold) take x[t+1]
        back = previous_segment(x[:, fold : 2 * fold], self.num_segments)  # channels [fold, 2*fold) take x[t-1]
        return torch.cat((ahead, back, x[:, 2 * fold :]), dim=1)

    def extra_repr(self) -> str:
        causal = ", causal=True" if self.causal else ""
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}{causal}"


def shift_kernel(channels: int, fold_div: int = 8, causal: bool = False) -> torch.Tensor:
    """The ``[C, 1, 3]`` depthwise temporal kernel that reproduces :class:`TemporalShift` (causal or not)."""
    fold = channels // fold_div
    weight = torch.zeros(channels, 1, 3)
    if causal:
        weight[:fold, 0, 0] = 1.0  # online shift: out[t] = x[t-1]
        weight[fold:, 0, 1] = 1.0  # identity
        return weight
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

    Causal (``causal=True``): ``out[t] = w0 * x[t-1] + w1 * x[t]``. The weight keeps its ``[C, 1, 3]``
    shape (offline weights load; the ``t+1`` tap ``w2`` is unused) and starts as the causal shift.

    Args:
        channels: channels ``C``.
        num_segments: segments per clip.
        fold_div: the initial shift moves ``1 / fold_div`` of the channels each way.
        causal: use the past and present taps only.
    """

    def __init__(self, channels: int, num_segments: int, fold_div: int = 8, causal: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.causal = causal
        self.weight = nn.Parameter(shift_kernel(channels, fold_div, causal))

    def taps(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The weights of ``x[t-1]``, ``x[t]`` and ``x[t+1]``, each ``[1, C, 1, 1]``."""
        # One contiguous row of C weights per tap: compiled kernels load each tap as a vector.
        taps = self.weight.to(dtype).squeeze(1).t().contiguous().view(3, 1, self.channels, 1, 1)
        return taps[0], taps[1], taps[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0, w1, w2 = self.taps(x.dtype)
        if self.causal:
            return w0 * previous_segment(x, self.num_segments) + w1 * x
        return w0 * previous_segment(x, self.num_segments) + w1 * x + w2 * next_segment(x, self.num_segments)

    def extra_repr(self) -> str:
        causal = ", causal=True" if self.causal else ""
        return f"{self.channels}, num_segments={self.num_segments}, fold_div={self.fold_div}{causal}"
