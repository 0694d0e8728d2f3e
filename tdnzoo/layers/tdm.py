"""Temporal difference modules of TDN (Wang et al., CVPR 2021): S-TDM and L-TDM.

Semantics follow the official MCG-NJU/TDN code exactly (see ``DESIGN.md`` §2); the
implementation batches what the official code runs twice (the forward and backward
differences share their weights), which changes no output.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ._fast import (
    _InChannelsLast,
    add_upsampled,
    avg_pool2x2,
    batch_norm,
    bn_affine,
    bn_is_affine,
    derived_from,
    eager_inference,
    fast_ops_enabled,
    inference_copy,
    is_channels_last,
    pointwise,
    upsample_width2x,
)
from ._native import (
    fuse_upsampled_,
    gate_temporal_conv,
    ltdm_gate,
    ltdm_mixed,
    native_library,
    pooled_frame_differences,
)
from .shift import TemporalConv, _split_time

__all__ = [
    "FusingReLU",
    "LongTermStack",
    "LongTermTDM",
    "ShortTermTDM",
    "frame_differences",
    "fuse_difference",
    "fusion_in_activation",
]


def _reduce(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The 1x1 reduction ``[N, C, H, W] -> [N, C/r, H, W]``; a GEMM on NCHW maps (faster there).

    Also under autograd: the GEMM's backward beats oneDNN's for a 1x1 convolution with few
    output channels (its input gradient is such a convolution with few input channels).
    """
    if not x.is_contiguous() or x.dim() != 4:
        return F.conv2d(x, weight, bias)
    n, c, h, w = x.shape
    hidden = weight.shape[0]
    flat = weight.view(1, hidden, c).expand(n, hidden, c)
    if bias is None:
        return torch.bmm(flat, x.view(n, c, h * w)).view(n, hidden, h, w)
    return torch.baddbmm(bias.view(1, hidden, 1), flat, x.view(n, c, h * w)).view(n, hidden, h, w)


class _DifferenceGate(torch.autograd.Function):
    """``x + 0.5 * x * (sigmoid(a) - sigmoid(b))``, the L-TDM output, with a short backward.

    Autograd through the plain ops spends about nine full-size passes on the backward (scalar
    products, a negation, two accumulations); this one spends five: ``dx = g * (1 + gate / 2)``,
    ``t = g * x / 2``, then ``t * s * (1 - s)`` for each sigmoid (negated for ``b``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sig_a, sig_b = torch.sigmoid(a), torch.sigmoid(b)
        gate = sig_a - sig_b
        ctx.save_for_backward(x, sig_a, sig_b, gate)
        return torch.addcmul(x, x, gate, value=0.5)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, sig_a, sig_b, gate = ctx.saved_tensors
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(grad, grad, gate, value=0.5).to(x.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # 0 + 0.5 * grad * x in one pass (the zero broadcasts)
            half = torch.addcmul(grad.new_zeros(()), grad, x, value=0.5)
            if ctx.needs_input_grad[1]:
                grad_a = torch.ops.aten.sigmoid_backward(half, sig_a).to(sig_a.dtype)
            if ctx.needs_input_grad[2]:
                grad_b = torch.ops.aten.sigmoid_backward(half, sig_b).neg_().to(sig_b.dtype)
        return grad_x, grad_a, grad_b


class LongTermTDM(nn.Module):
    """Long-term temporal difference module (official ``mSEModule``).

    Works on ``[B*T, C, H, W]``. With ``b = BN(conv1x1(x))`` at ``C // reduction`` channels and a
    depthwise 3x3 ``conv_neighbor``, the forward difference is
    ``conv_neighbor(b)[t+1] - b[t]`` (zero at the last segment) and the backward one
    ``conv_neighbor(b)[t-1] - b[t]`` (zero at the first). Each passes through three equally
    weighted branches (identity; 2x2 avg-pool, 3x3 conv, BN, nearest upsample; 3x3 conv, BN)
    and a 1x1 conv back to ``C`` with BN, giving logits ``z_f`` and ``z_b``;
    ``sigmoid(z) - 0.5`` of both directions is averaged into an attention map ``y`` and the
    output is ``x + x * y``.

    The computation is rearranged for speed, with the same result up to float rounding:
    ``y = 0.5 * (sigmoid(z_f) - sigmoid(-z_b))`` (as ``sigmoid(z) = 1 - sigmoid(-z)``) with the
    sign of ``-z_b`` folded into the weights, so the full-resolution work is one 1x1 product
    per direction, a sigmoid, a subtraction and an ``addcmul``. In eval mode every BN folds
    into the convolution before it and the 1/3 branch weights into ``conv_expand``, and
    inference reuses its buffers. Both directions share all weights and run as one batch.

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

    def _folded(self, cache: bool) -> dict[str, tuple[torch.Tensor, ...]]:
        """The eval-mode weights with every BN folded into the conv before it.

        ``expand`` also carries the branches' 1/3 weights and the sign of the backward
        direction (so one product per direction gives ``[z_f, -z_b]``). With ``cache`` (inference
        without autograd) the result is kept until a parameter or buffer of the module changes
        value (see :func:`derived_from`).
        """
        if cache:
            return derived_from(self, "_tdnzoo_folded", lambda: self._fold(for_inference=True))
        return self._fold(for_inference=False)

    def _fold(self, for_inference: bool) -> dict[str, tuple[torch.Tensor, ...]]:
        folded = {}
        for name, conv, bn in (("reduce", self.conv_reduce, self.bn_reduce), ("pooled", self.conv_pooled, self.bn_pooled),
                               ("full", self.conv_full, self.bn_full)):
            scale, shift = bn_affine(bn)
            folded[name] = (conv.weight * scale.view(-1, 1, 1, 1), shift)
        scale, shift = bn_affine(self.bn_expand)
        weight = self.conv_expand.weight.flatten(1) * (scale / 3.0).unsqueeze(1)
        folded["expand"] = (torch.stack((weight, -weight)), torch.stack((shift, -shift)))
        if for_inference:
            # For the inference path: the bias as an extra input channel, the pooling's 1/4 in the weight.
            w, b = folded["expand"]
            folded["expand_aug"] = (torch.cat((w, b.unsqueeze(-1)), dim=2),)
            folded["pooled_sum"] = (folded["pooled"][0] * 0.25, folded["pooled"][1])
        return folded

    def _stacked_differences(self, b: torch.Tensor) -> torch.Tensor:
        """``[fwd; bwd]`` differences of the bottleneck ``b``, stacked on the batch."""
        nb = self.conv_neighbor(b)
        b5 = _split_time(b, self.num_segments)
        nb5 = nb.view_as(b5)
        if not eager_inference(nb):
            # Concatenation for autograd (slice assignment would make its backward copy gradients)
            # and for torch.compile (no out= arguments).
            zero = b5.new_zeros((b5.shape[0], 1, *b5.shape[2:]))
            forward = torch.cat((nb5[:, 1:] - b5[:, :-1], zero), dim=1)
            backward = torch.cat((zero, nb5[:, :-1] - b5[:, 1:]), dim=1)
            return torch.cat((forward, backward)).flatten(0, 1)
        diff = b5.new_zeros((2, *b5.shape))  # zero at each direction's open end
        torch.sub(nb5[:, 1:], b5[:, :-1], out=diff[0, :, :-1])
        torch.sub(nb5[:, :-1], b5[:, 1:], out=diff[1, :, 1:])
        return diff.flatten(0, 2)

    def differences(self, x: torch.Tensor) -> torch.Tensor:
        """Forward and backward feature differences stacked on the batch: ``[2*B*T, C//r, H, W]``.

        The first half is ``conv_neighbor(b)[t+1] - b[t]`` (zero at the last segment), the
        second ``conv_neighbor(b)[t-1] - b[t]`` (zero at the first).
        """
        return self._stacked_differences(self.bn_reduce(self.conv_reduce(x)))

    def _signed_logits(self, x: torch.Tensor, inplace: bool = False) -> list[torch.Tensor]:
        """``[z_f, -z_b]``, each ``[B*T, C, H, W]``."""
        norms = (self.bn_reduce, self.bn_pooled, self.bn_full, self.bn_expand)
        if all(bn_is_affine(bn) for bn in norms):
            f = self._folded(cache=inplace)
            if inplace and x.is_contiguous():
                return self._inference_logits(x, f)
            diff = self._stacked_differences(_reduce(x, *f["reduce"]))
            pooled = F.conv2d(avg_pool2x2(diff), *f["pooled"], padding=1)
            mixed = F.conv2d(diff, *f["full"], padding=1)
            mixed = add_upsampled(mixed.add_(diff) if inplace else mixed + diff, pooled, inplace=inplace)
            return pointwise(mixed, *f["expand"], inplace=inplace, channels_last=is_channels_last(x))
        # Training: the official code calls each BN once per direction, so each direction is
        # normalised with its own batch statistics and the running statistics update twice.
        diff = self._stacked_differences(self.bn_reduce(_reduce(x, self.conv_reduce.weight)))
        pooled = self._per_direction(self.bn_pooled, self.conv_pooled(avg_pool2x2(diff)))
        full = self._per_direction(self.bn_full, self.conv_full(diff))
        mixed = add_upsampled(diff + full, pooled) * (1.0 / 3.0)
        bn = self.bn_expand
        if type(bn) is nn.BatchNorm2d and bn.training and bn.affine and bn.track_running_stats:
            weight, bias = self._expand_batch_statistics(mixed)
            return pointwise(mixed, weight, bias, channels_last=is_channels_last(x))
        weight = self.conv_expand.weight.flatten(1).expand(2, -1, -1)
        forward, backward = pointwise(mixed, weight, channels_last=is_channels_last(x))
        return [batch_norm(bn, forward), batch_norm(bn, backward, gain=-1.0)]

    def _expand_batch_statistics(self, mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``bn_expand(conv_expand(.))`` in training, per direction, as one affine map per direction.

        ``conv_expand`` is linear, so the batch mean and variance of its ``C`` outputs follow from
        the mean and ``K x K`` covariance of its ``K = C/16`` inputs: ``mean_z = W mean_m``,
        ``var_z = diag(W cov_m W^T)``. BatchNorm then is ``scale * (W m - mean_z) + beta``: a
        weight and bias per direction for the product, with the full-resolution normalisation
        pass (and its backward) gone. Autograd sees every step, so gradients, through the batch
        statistics too, are BatchNorm's; the running statistics update twice, as the official
        per-direction calls do. Returns ``weight [2, C, K]`` and ``bias [2, C]``, the backward
        direction negated (see :meth:`_signed_logits`).
        """
        bn = self.bn_expand
        w = self.conv_expand.weight.flatten(1).float()  # [C, K]; statistics in fp32, as BN keeps them
        n2, k = mixed.shape[:2]
        m = mixed.float().reshape(2, n2 // 2, k, -1)  # [direction, N, K, H*W]
        count = m.shape[1] * m.shape[3]
        mean = m.mean(dim=(1, 3))  # [2, K]
        centred = (m - mean[:, None, :, None]).flatten(0, 1)
        cov = torch.bmm(centred, centred.transpose(1, 2)).view(2, -1, k, k).sum(1) / count  # biased, as BN
        mean_z = mean @ w.t()  # [2, C]
        var_z = ((w @ cov) * w).sum(-1)  # [2, C]: diag(W cov W^T) per direction
        scale = bn.weight * torch.rsqrt(var_z + bn.eps)
        sign = torch.tensor([1.0, -1.0], dtype=scale.dtype, device=scale.device).view(2, 1)
        weight = (sign * scale).unsqueeze(-1) * w
        bias = sign * (bn.bias - scale * mean_z)
        with torch.no_grad():  # running statistics as two nn.BatchNorm2d calls keep them
            unbiased = var_z * (count / max(count - 1, 1))
            for direction in range(2):
                bn.num_batches_tracked.add_(1)
                momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                bn.running_mean.lerp_(mean_z[direction].to(bn.running_mean.dtype), momentum)
                bn.running_var.lerp_(unbiased[direction].to(bn.running_var.dtype), momentum)
        return weight, bias

    def _inference_logits(self, x: torch.Tensor, f: dict[str, tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
        """The folded path for eager inference on NCHW maps, written into buffers we own.

        Same arithmetic as the general folded path; what it saves is allocations and passes:
        only the open ends of the difference buffer are zeroed, the mixed map is built right
        next to its channel of ones (the expand bias), and both directions' logits land in
        one buffer.
        """
        n, channels, h, w = x.shape
        mixed_aug = self._inference_mixed(x, f)
        (weight,) = f["expand_aug"]
        weight = weight.to(x.dtype)
        out = x.new_empty((2, n, channels, h * w))
        for g in range(2):  # the two directions, with the backward one's sign in its weight
            torch.bmm(weight[g].expand(n, channels, self.hidden + 1), mixed_aug[g], out=out[g])
        return [part.view(n, channels, h, w) for part in out.unbind(0)]

    def _inference_mixed(self, x: torch.Tensor, f: dict[str, tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """Both directions' mixed maps (the input of ``conv_expand``) and a channel of ones: ``[2, N, K+1, H*W]``."""
        n, channels, h, w = x.shape
        hidden = self.hidden
        # The same, reduction included, as one C kernel (see ._native)
        fused = ltdm_mixed(x, f["reduce"], self.conv_neighbor.weight, f["pooled_sum"], f["full"], self.num_segments)
        if fused is not None:
            return fused
        b = _reduce(x, *f["reduce"])
        b5 = _split_time(b, self.num_segments)
        nb5 = self.conv_neighbor(b).view_as(b5)
        diff6 = x.new_empty((2, *b5.shape))
        diff6[0, :, -1].zero_()  # no later segment
        diff6[1, :, 0].zero_()  # no earlier segment
        torch.sub(nb5[:, 1:], b5[:, :-1], out=diff6[0, :, :-1])
        torch.sub(nb5[:, :-1], b5[:, 1:], out=diff6[1, :, 1:])
        diff = diff6.view(2 * n, hidden, h, w)
        pooled = F.conv2d(avg_pool2x2(diff, scale=1.0), *f["pooled_sum"], padding=1)
        mixed_aug = x.new_empty((2, n, hidden + 1, h * w))
        mixed_aug[:, :, hidden].fill_(1.0)
        mixed = mixed_aug[:, :, :hidden].view(2 * n, hidden, h, w)
        torch.add(F.conv2d(diff, *f["full"], padding=1), diff, out=mixed)
        add_upsampled(mixed, pooled, inplace=True)
        return mixed_aug

    def fused_forward(self, x: torch.Tensor, temporal_weight: torch.Tensor | None = None) -> torch.Tensor | None:
        """The output through the C kernels of :mod:`._native`, or ``None`` where they do not apply.

        They apply to float32 NCHW maps on CPU, outside autocast, tracing and ``torch.compile``.
        In eager inference the whole module runs in C; under autograd the logits come from the
        ops and the gate from C, forward and backward. With ``temporal_weight`` (a
        :class:`TemporalConv`'s ``[C, 1, 3]`` weight) the temporal conv that follows in TDN's
        blocks runs in the same pass.
        """
        if (x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or not x.is_contiguous()
                or not fast_ops_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.is_autocast_enabled("cpu") or native_library() is None):
            return None
        extra = () if temporal_weight is None else (temporal_weight,)
        if eager_inference(x, *extra, module=self):
            if not all(bn_is_affine(bn) for bn in (self.bn_reduce, self.bn_pooled, self.bn_full, self.bn_expand)):
                return None
            f = self._folded(cache=True)
            (weight,) = f["expand_aug"]
            return ltdm_gate(x, self._inference_mixed(x, f), weight, temporal_weight, self.num_segments)
        forward, negated_backward = self._signed_logits(x)
        return gate_temporal_conv(x, forward, negated_backward, temporal_weight, self.num_segments)

    @staticmethod
    def _per_direction(bn: nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
        if bn_is_affine(bn):
            return bn(y)
        forward, backward = y.chunk(2)
        return torch.cat((bn(forward), bn(backward)))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The map ``y`` in ``x + x * y``, in ``(-0.5, 0.5)``."""
        forward, negated_backward = self._signed_logits(x)
        return 0.5 * (torch.sigmoid(forward) - torch.sigmoid(negated_backward))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The official formulation, op for op (see the class doc); slower, same result."""
        diff = self.differences(x)
        pooled = self._per_direction(self.bn_pooled, self.conv_pooled(F.avg_pool2d(diff, 2)))
        pooled = F.interpolate(pooled, size=diff.shape[-2:])
        full = self._per_direction(self.bn_full, self.conv_full(diff))
        mixed = diff / 3.0 + pooled / 3.0 + full / 3.0
        gate = torch.sigmoid(self._per_direction(self.bn_expand, self.conv_expand(mixed))) - 0.5
        gate_forward, gate_backward = gate.chunk(2)
        return x + x * (0.5 * gate_forward + 0.5 * gate_backward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_spare(x)[0]

    def forward_with_spare(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output, and in eager inference a spare buffer of its shape that the next op may fill.

        Inference computes both directions' logits into one buffer and overwrites it in place,
        so the output and the spare are its two halves and no further full-size tensor is
        allocated (fresh allocations cost page faults on CPU). Otherwise the spare is ``None``.
        """
        if not fast_ops_enabled():
            return self.reference_forward(x), None
        fused = self.fused_forward(x)
        if fused is not None:
            return fused, None
        return self._ops_forward_with_spare(x)

    def _ops_forward_with_spare(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`forward_with_spare` on PyTorch ops (where the C kernels do not apply)."""
        if eager_inference(x, module=self):
            forward, negated_backward = self._signed_logits(x, inplace=True)
            gate = forward.sigmoid_().sub_(negated_backward.sigmoid_())
            return torch.addcmul(x, x, gate, value=0.5, out=gate), negated_backward
        forward, negated_backward = self._signed_logits(x)
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return _DifferenceGate.apply(x, forward, negated_backward), None
        gate = torch.sigmoid(forward) - torch.sigmoid(negated_backward)
        return torch.addcmul(x, x, gate, value=0.5), None  # x + x * y

    def extra_repr(self) -> str:
        return f"{self.channels}, num_segments={self.num_segments}, reduction={self.reduction}"


class LongTermStack(nn.Sequential):
    """TDN's insert in a residual block: an L-TDM (``ltdm``) then a temporal conv (``tconv``).

    An ``nn.Sequential`` (same parameter names) whose inference lets the temporal conv write
    into the spare buffer the L-TDM leaves, saving one full-size allocation per block.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ltdm = getattr(self, "ltdm", None)
        tconv = getattr(self, "tconv", None)
        if not isinstance(ltdm, LongTermTDM) or not isinstance(tconv, TemporalConv) or len(self) != 2:
            return super().forward(x)
        if not fast_ops_enabled():
            return super().forward(x)
        fused = ltdm.fused_forward(x, tconv.weight) if tconv.num_segments == ltdm.num_segments else None
        if fused is not None:
            return fused
        y, spare = ltdm._ops_forward_with_spare(x)
        if spare is None or not eager_inference(y, tconv.weight):
            return tconv(y)
        return tconv(y, out=spare)


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


def fuse_difference(
    x: torch.Tensor, diff: torch.Tensor, alpha: float, beta: float, *, inplace: bool = False
) -> torch.Tensor:
    """``alpha * x + beta * up(diff)`` with nearest upsampling to ``x``'s size (official fusion).

    For an exact 2x upsampling (the S-TDM case) only the width is upsampled into a new map and
    the row pairs of ``x`` take it by broadcasting (a contiguous inner loop; broadcasting both
    ways is several times slower on CPU). When ``alpha + beta == 1`` (the official weights)
    the fusion is a single ``lerp``. With ``inplace`` the result overwrites ``x``; in eager CPU
    inference that is one pass of a C kernel (see ``tdnzoo.layers._native``), same formula.
    """
    h, w = x.shape[-2:]
    dh, dw = diff.shape[-2:]
    if not fast_ops_enabled():
        return alpha * x + beta * (F.interpolate(diff, size=(h, w)) if (dh, dw) != (h, w) else diff)
    if inplace and eager_inference(x, diff) and fuse_upsampled_(x, diff, alpha, beta) is not None:
        return x  # the same in one pass, a C kernel (see ._native)
    shape = x.shape
    if (h, w) == (2 * dh, 2 * dw) and x.dim() == 4:
        n, c = x.shape[:2]
        diff = upsample_width2x(diff).unsqueeze(3)
        x = x.view(n, c, dh, 2, w)
    elif (dh, dw) != (h, w):
        diff = F.interpolate(diff, size=(h, w))
    diff = diff.to(x.dtype)
    if alpha + beta == 1.0 and alpha != 1.0:
        out = x.lerp_(diff, beta) if inplace else torch.lerp(x, diff, beta)  # x + beta * (diff - x)
    elif inplace:
        out = x.mul_(alpha).add_(diff, alpha=beta)
    else:
        out = torch.add(x * alpha, diff, alpha=beta)
    return out.view(shape)


class _PendingFusion:
    """A fusion that :class:`FusingReLU` may apply: ``fuse_difference(relu(x), small, alpha, beta)``."""

    __slots__ = ("small", "alpha", "beta", "done")

    def __init__(self, small: torch.Tensor, alpha: float, beta: float) -> None:
        self.small, self.alpha, self.beta, self.done = small, alpha, beta, False


# Per thread (and task): a model running in two threads at once keeps its fusions apart.
_PENDING_FUSION: contextvars.ContextVar[_PendingFusion | None] = contextvars.ContextVar(
    "tdnzoo_pending_fusion", default=None
)


@contextlib.contextmanager
def fusion_in_activation(small: torch.Tensor, alpha: float, beta: float) -> Iterator[_PendingFusion]:
    """Within this block, the first :class:`FusingReLU` called fuses ``small`` into its output.

    TDN fuses the S-TDM stage into the RGB stream right after the first stage, whose last op is
    a ReLU: done there, the fusion rides on the ReLU's pass over the map instead of making one
    more. The yielded object's ``done`` says whether it happened (it does not when the C kernels
    do not apply: the caller then fuses as usual).
    """
    pending = _PendingFusion(small, alpha, beta)
    token = _PENDING_FUSION.set(pending)
    try:
        yield pending
    finally:
        _PENDING_FUSION.reset(token)


class FusingReLU(nn.ReLU):
    """``nn.ReLU(inplace=True)`` that applies a pending TDN fusion in the same pass.

    TDN models put it at the end of the backbone's first stage (see
    :func:`tdnzoo.models.temporalize`); inside :func:`fusion_in_activation`, in eager CPU inference
    with the C kernels, it returns ``fuse_difference(relu(x), ...)`` in one pass. Everywhere else,
    and under tracing and ``torch.compile``, it is a plain in-place ReLU. No parameters: state
    dicts are unchanged.
    """

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            pending = _PENDING_FUSION.get()
            if pending is not None and not pending.done and eager_inference(x, pending.small):
                if fuse_upsampled_(x, pending.small, pending.alpha, pending.beta, relu=True) is not None:
                    pending.done = True
                    return x
        return super().forward(x)


class ShortTermTDM(nn.Module):
    """Short-term temporal difference module: the difference stream of TDN's early stages.

    Takes the ``frames_per_segment`` RGB frames of each segment stacked on channels,
    ``[B*T, F*3, H, W]``; stacks their ``F-1`` differences, average-pools them 2x2 (pooling first,
    which is equal and cheaper) and runs them
    through its own ``stem`` (a copy of the backbone's stem whose first conv takes ``(F-1)*3``
    channels) and its own copy of the first stage. Returns both feature maps; the model fuses
    them into the RGB stream with :func:`fuse_difference`. In CPU inference with the native
    kernels (see ``tdnzoo.layers._native``) the stage map comes back channels_last, the layout it
    is computed in, since the fusion kernel reads it as it is.

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
        # Average pooling is linear, so pooling the frames before differencing gives the
        # official pool(difference) on a quarter of the pixels.
        inference = eager_inference(frames, module=self)
        # Frames that need no gradient (in training too) go through the C kernel, unless traced or compiled.
        constant_input = (fast_ops_enabled() and not (torch.is_grad_enabled() and frames.requires_grad)
                          and not torch.jit.is_tracing() and not torch.compiler.is_compiling())
        fused = pooled_frame_differences(frames, self.frames_per_segment) if constant_input else None
        if fused is not None:  # the same in one pass, a C kernel (see ._native)
            diff = fused
        elif fast_ops_enabled():
            diff = frame_differences(avg_pool2x2(frames), self.frames_per_segment)
        else:  # the official order: difference, then pool
            diff = F.avg_pool2d(frame_differences(frames, self.frames_per_segment), 2)
        if not inference:
            cpu_fast = (fast_ops_enabled() and diff.device.type == "cpu" and diff.dim() == 4
                        and not is_channels_last(diff) and not torch.compiler.is_compiling())
            stem_out = self._train_stem(diff) if cpu_fast else self.stem(diff)
            if cpu_fast:
                # channels_last runs this stage's forward and backward 1.2x faster on CPU (same
                # math). Not the stem's max-pool: it breaks ties differently there, so its
                # gradients would leave the official code's.
                stage_out = self.stage(stem_out.contiguous(memory_format=torch.channels_last))
                return stem_out, stage_out.contiguous()
            return stem_out, self.stage(stem_out)
        # BN folded into the convs, fast max-pool: cached inference copies of both
        stem_out = inference_copy(self.stem, diff)(diff)
        # The stage (a residual stage at a quarter of the frame size) runs 1.7x faster
        # channels_last on CPU (measured on ResNet-50); the stem measured no faster.
        stage = inference_copy(self.stage, stem_out, channels_last=stem_out.device.type == "cpu")
        if isinstance(stage, _InChannelsLast) and native_library() is not None:
            # Left channels_last: the fusion kernel reads that layout, which saves converting it back.
            return stem_out, stage.inner(stem_out.contiguous(memory_format=torch.channels_last))
        return stem_out, stage(stem_out)

    def _train_stem(self, diff: torch.Tensor) -> torch.Tensor:
        """The stem under autograd on CPU, its leading convolution channels_last (1.3x faster
        forward and backward for a 7x7 conv on few channels); the rest, max-pool included, NCHW."""
        modules = list(self.stem.children()) if isinstance(self.stem, nn.Sequential) else []
        if not modules or type(modules[0]) is not nn.Conv2d:
            return self.stem(diff)
        y = modules[0](diff.contiguous(memory_format=torch.channels_last)).contiguous()
        for module in modules[1:]:
            y = module(y)
        return y

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, frames_per_segment={self.frames_per_segment}"
