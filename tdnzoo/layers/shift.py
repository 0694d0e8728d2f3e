"""Temporal shift (TSM) and the learnable temporal convolution that TDN initialises as a shift.

Both act on per-frame feature maps ``[B*T, C, H, W]`` (segment-major) and need ``num_segments``
to see the time axis. Channels ``[0, fold)`` look one segment ahead, ``[fold, 2*fold)`` one
segment back, the rest stay, with ``fold = C // fold_div`` (official TSM and TDN semantics).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._fast import fast_ops_enabled

__all__ = ["TemporalShift", "TemporalConv", "shift_kernel"]


def _split_time(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    nt, c, h, w = x.shape
    if nt % num_segments:
        raise ValueError(
            f"expected a batch of B*{num_segments} frames (num_segments={num_segments}), got {nt}"
        )
    return x.view(nt // num_segments, num_segments, c, h, w)


def _next(x5: torch.Tensor) -> torch.Tensor:
    """x[t+1] at every t, zero after the last segment. x5 is [B, T, C, H, W]."""
    return F.pad(x5[:, 1:], (0, 0, 0, 0, 0, 0, 0, 1))


def _prev(x5: torch.Tensor) -> torch.Tensor:
    """x[t-1] at every t, zero before the first segment."""
    return F.pad(x5[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))


class TemporalShift(nn.Module):
    """Zero-padded temporal shift of a fraction of the channels (TSM, Lin et al. 2019).

    Args:
        num_segments: segments per clip; the batch dimension holds ``B * num_segments`` frames.
        fold_div: ``1 / fold_div`` of the channels shift each way (official: 8).
    """

    def __init__(self, num_segments: int, fold_div: int = 8) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x5 = _split_time(x, self.num_segments)
        fold = x5.shape[2] // self.fold_div
        if fold == 0:
            return x
        # Shift only the 2*fold moving channels; the untouched rest is concatenated as is.
        ahead = _next(x5[:, :, :fold])
        back = _prev(x5[:, :, fold : 2 * fold])
        out = torch.cat((ahead, back, x5[:, :, 2 * fold :]), dim=2)
        return out.view_as(x)

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


def _taps(weight: torch.Tensor) -> list[torch.Tensor]:
    """The three taps of a ``[C, 1, 3]`` kernel, each shaped to broadcast over ``[B, T, C, H, W]``."""
    return [weight[:, 0, k].view(1, 1, -1, 1, 1) for k in range(3)]


def _temporal_conv3(x5: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[t] = w0 * x[t-1] + w1 * x[t] + w2 * x[t+1]`` on ``[B, T, C, H, W]``, zero padded.

    Three passes and no padded copies: the centre tap writes every frame, then the two
    neighbour taps accumulate into the frames that have a neighbour.
    """
    w0, w1, w2 = _taps(weight)
    out5 = x5 * w1 if out is None else torch.mul(x5, w1, out=out.view_as(x5))
    out5[:, 1:].addcmul_(x5[:, :-1], w0)
    out5[:, :-1].addcmul_(x5[:, 1:], w2)
    return out5


def _tap_gradients(grad: torch.Tensor, x5: torch.Tensor) -> torch.Tensor:
    """``[C, 3]`` weight gradient: per channel, sum of ``grad[t] * x[t + k - 1]`` for the taps ``k``.

    One GEMM per clip reads both maps once: for each channel it forms the ``T x T`` products of
    all frame pairs, whose three central diagonals are the taps' sums (elementwise products and
    sums would take six full-size passes).
    """
    b, t, c = grad.shape[:3]
    g = grad.reshape(b, t, c, -1)
    x = x5.reshape(b, t, c, -1)
    pairs = sum(torch.bmm(g[i].transpose(0, 1), x[i].permute(1, 2, 0)) for i in range(b))  # [C, T, T]
    # pairs[c, s, r] = sum over pixels of grad[s] * x[r]; tap k pairs r = s + k - 1
    return torch.stack([pairs.diagonal(offset, dim1=1, dim2=2).sum(-1) for offset in (-1, 0, 1)], dim=-1)


class _TemporalConv3(torch.autograd.Function):
    """:func:`_temporal_conv3` with a hand-written backward.

    Autograd through the in-place slice updates would clone full-size gradients and build
    zero-padded slice gradients; the adjoint is just the same temporal conv with the kernel
    flipped, and each weight gradient a per-channel dot product of shifted maps.
    """

    @staticmethod
    def forward(ctx, x5: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x5, weight)
        return _temporal_conv3(x5, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x5, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _temporal_conv3(grad, weight.flip(-1))  # x[s] reaches out[s+1] by w0, out[s-1] by w2
        if ctx.needs_input_grad[1]:
            grad_w = _tap_gradients(grad, x5).unsqueeze(1).to(weight.dtype)
        return grad_x, grad_w


class TemporalConv(nn.Module):
    """Learnable depthwise temporal convolution, kernel 3, zero padding, no bias.

    The official TDN ``ShiftModule``: weight ``[C, 1, 3]`` initialised to the shift above, so at
    init it equals :class:`TemporalShift`. The official code permutes to ``[B*H*W, C, T]`` and
    runs ``Conv1d``; a kernel-3 depthwise conv along time is three per-channel scaled copies of
    the input, which we accumulate directly on ``[B, T, C, H, W]`` (no permutes, no padding
    copies, channels_last-safe).
    ``out[t] = w0 * x[t-1] + w1 * x[t] + w2 * x[t+1]``, as ``Conv1d`` cross-correlation.
    """

    def __init__(self, channels: int, num_segments: int, fold_div: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.weight = nn.Parameter(shift_kernel(channels, fold_div))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Temporal convolution of ``x``; ``out`` (same shape, no autograd) receives the result."""
        x5 = _split_time(x, self.num_segments)
        if not fast_ops_enabled():
            return self.reference_forward(x)
        weight = self.weight.to(x.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            if out is not None:
                raise ValueError("TemporalConv(out=...) writes into a given buffer: not with autograd")
            return _TemporalConv3.apply(x5, weight).view_as(x)
        return _temporal_conv3(x5, weight, out).view_as(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The official formulation: permute to ``[B*H*W, C, T]`` and run a depthwise ``Conv1d``."""
        nt, c, h, w = x.shape
        t = self.num_segments
        y = x.view(nt // t, t, c, h, w).permute(0, 3, 4, 2, 1).reshape(-1, c, t)
        y = F.conv1d(y, self.weight.to(x.dtype), padding=1, groups=c)
        return y.view(nt // t, h, w, c, t).permute(0, 4, 3, 1, 2).reshape(nt, c, h, w)

    def extra_repr(self) -> str:
        return f"{self.channels}, num_segments={self.num_segments}, fold_div={self.fold_div}"
