"""Exact rearrangements that make the temporal modules cheap on CPU (and everywhere else).

Each helper computes what the plain module sequence computes, up to float rounding:
eval-mode BatchNorm folded into the convolution before it, a per-call gain folded into BN's
affine parameters, 1x1 convolutions with few input channels as GEMMs, nearest 2x upsampling as a
broadcast. None of them keeps state between calls, so they stay correct when weights change.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "add_upsampled",
    "fast_ops_enabled",
    "reference_ops",
    "avg_pool2x2",
    "batch_norm",
    "bn_affine",
    "bn_is_affine",
    "conv_bn",
    "eager_inference",
    "is_channels_last",
    "pointwise",
]


_REFERENCE = contextvars.ContextVar("tdnzoo_reference_ops", default=False)


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Within this block the temporal modules run the plain, official formulation.

    Same outputs up to float rounding, slower. Used to count FLOPs by the papers' convention
    (fvcore on the official op sequence), to test the fast paths and to time what they save.

    Example:
        >>> with tdnzoo.layers.reference_ops():
        ...     logits = model(clip)
    """
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def fast_ops_enabled() -> bool:
    """False inside :func:`reference_ops`."""
    return not _REFERENCE.get()


def eager_inference(*tensors: torch.Tensor) -> bool:
    """True when in-place updates and preallocated outputs are safe and worth it.

    That is: autograd records nothing for these tensors, no autocast region would need to
    cast an ``out=`` argument, and we are not being traced by ``torch.compile`` (which fuses
    the plain ops better itself).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not fast_ops_enabled():
        return False
    device = tensors[0].device.type
    return not torch.is_autocast_enabled(device)


def bn_is_affine(bn: nn.BatchNorm2d) -> bool:
    """True when ``bn`` normalises with its running statistics (a per-channel affine map)."""
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(z) == z * scale + shift`` per channel, for an affine-mode BN."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))`` as one biased convolution, for an affine-mode BN and a bias-free conv.

    The weights are folded on every call (a few tiny ops), so they always follow the parameters.
    """
    scale, shift = bn_affine(bn)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """``gain * bn(x)``, with the gain folded into BN's affine parameters (no extra pass).

    The running statistics update exactly as ``bn(x)`` would update them. BN subclasses
    (SyncBatchNorm, ...) and BNs without affine parameters are called as they are, then scaled.
    """
    if gain == 1.0 or type(bn) is not nn.BatchNorm2d or bn.weight is None or bn.bias is None:
        out = bn(x)
        return out if gain == 1.0 else out * gain
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(
        x,
        bn.running_mean if track else None,
        bn.running_var if track else None,
        bn.weight * gain,
        bn.bias * gain,
        use_batch_stats,
        momentum,
        bn.eps,
    )


def pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    inplace: bool = False,
    channels_last: bool = False,
) -> list[torch.Tensor]:
    """1x1 convolutions of the ``G`` batch chunks of ``x`` ``[G*N, K, H, W]``, each by its own weight.

    Chunk ``g`` uses ``weight[g]`` ``[C, K]`` and ``bias[g]`` (``bias`` is ``[G, C]``); returns
    ``G`` maps ``[N, C, H, W]``. On contiguous maps each is a batched matrix product with the
    bias on an appended channel of ones: oneDNN runs 1x1 convolutions with few input channels
    on NCHW maps several times slower than this GEMM. With ``inplace`` the ``G`` outputs are
    written into one preallocated buffer (no autograd). With ``channels_last`` the outputs
    are channels_last, through ``F.conv2d``, which is fast for that format.
    """
    groups, channels, k = weight.shape
    n, _, h, w = x.shape
    n //= groups
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        return [
            F.conv2d(part, weight[g].view(channels, k, 1, 1), None if bias is None else bias[g])
            for g, part in enumerate(x.chunk(groups))
        ]
    x = x.view(groups, n, k, h * w)
    if bias is not None:
        x = torch.cat((x, x.new_ones(groups, n, 1, h * w)), dim=2)
        weight = torch.cat((weight, bias.unsqueeze(-1)), dim=2)
        k += 1
    weight = weight.to(x.dtype)
    if inplace:
        # bmm into a given buffer takes MKL's GEMM, measurably faster here than letting bmm
        # allocate (oneDNN path); one buffer for all groups also saves page faults.
        out = x.new_empty((groups, n, channels, h * w))
        weight = weight.unsqueeze(1).expand(groups, n, channels, k).reshape(groups * n, channels, k)
        torch.bmm(weight, x.view(groups * n, k, h * w), out=out.view(groups * n, channels, h * w))
        return [part.view(n, channels, h, w) for part in out.unbind(0)]
    return [torch.matmul(weight[g : g + 1], x[g]).view(n, channels, h, w) for g in range(groups)]


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D map stored channels_last (and not also plain contiguous, as 1x1 maps are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def avg_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` (floor mode) as two pairwise sums, 3x faster on NCHW maps on CPU."""
    if is_channels_last(x) or x.dim() != 4:
        return F.avg_pool2d(x, 2)
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    rows = x[..., 0::2, :] + x[..., 1::2, :]  # contiguous rows first: the cheap direction
    return (rows[..., 0::2] + rows[..., 1::2]) * 0.25


def add_upsampled(x: torch.Tensor, small: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``x + up(small)`` with nearest upsampling to ``x``'s size.

    An exact 2x upsampling is a broadcast over a ``[.., h, 2, w, 2]`` view, so the upsampled
    map is never built; other sizes use ``F.interpolate`` (nearest, as the official code).
    """
    h, w = x.shape[-2:]
    sh, sw = small.shape[-2:]
    if (h, w) == (2 * sh, 2 * sw):
        n, c = x.shape[:2]
        x6 = x.view(n, c, sh, 2, sw, 2)
        small6 = small.view(n, c, sh, 1, sw, 1)
        return (x6.add_(small6) if inplace else x6 + small6).view(x.shape)
    up = F.interpolate(small, size=(h, w))
    return x.add_(up) if inplace else x + up
