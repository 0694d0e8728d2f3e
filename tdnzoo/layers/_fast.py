"""Exact rearrangements that make the temporal modules cheap on CPU (and everywhere else).

Each helper computes what the plain module sequence computes, up to float rounding:
eval-mode BatchNorm folded into the convolution before it, a per-call gain folded into BN's
affine parameters, 1x1 convolutions with few input channels as GEMMs, nearest 2x upsampling as a
broadcast, 3x3/2 max-pooling as strided maxima. What is derived from the weights (folded
weights, BN-folded ``torch.fx`` copies) is cached per module by :func:`derived_from`, which
compares the weights' values at every call and rebuilds on any change.
"""
from __future__ import annotations

import contextlib
import contextvars
import operator
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._native import ByteSnapshot
from ._native import max_pool3x3s2 as native_max_pool3x3s2

__all__ = [
    "add_upsampled",
    "fast_ops_enabled",
    "reference_ops",
    "avg_pool2x2",
    "batch_norm",
    "bn_affine",
    "bn_is_affine",
    "eager_inference",
    "is_channels_last",
    "max_pool3x3s2",
    "inference_copy",
    "pointwise",
    "upsample_width2x",
    "derived_from",
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


def eager_inference(*tensors: torch.Tensor, module: nn.Module | None = None) -> bool:
    """True when in-place updates and preallocated outputs are safe and worth it.

    That is: autograd records nothing for these tensors (nor for ``module``'s parameters, which
    are only looked at when grad mode is on: walking them costs more than the small ops they
    guard), no autocast region would need to cast an ``out=`` argument, and we are not being
    traced by ``torch.compile`` (which fuses the plain ops better itself).
    """
    if torch.is_grad_enabled():
        if any(t.requires_grad for t in tensors):
            return False
        if module is not None and any(p.requires_grad for p in module.parameters()):
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


def _max_pool_pairs(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over windows {2j-1, 2j, 2j+1} along ``dim`` (padding 1, stride 2), out of place."""
    even = x[(slice(None),) * (dim % x.dim()) + (slice(0, None, 2),)]
    odd = x[(slice(None),) * (dim % x.dim()) + (slice(1, None, 2),)]
    n_even, n_odd = even.shape[dim], odd.shape[dim]
    if n_odd == n_even:
        out = torch.maximum(even, odd)
    else:
        out = even.clone()
        head = out.narrow(dim, 0, n_odd)
        torch.maximum(head, odd, out=head)
    if n_even > 1:
        tail = out.narrow(dim, 1, n_even - 1)
        torch.maximum(tail, odd.narrow(dim, 0, n_even - 1), out=tail)
    return out


def max_pool3x3s2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 3, 2, 1)`` as strided maxima, width then height; exact (NaN included).

    Several times faster than PyTorch's NCHW CPU kernel. Inference only: ``torch.maximum``
    splits the gradient of ties where max-pooling picks one input.
    """
    return _max_pool_pairs(_max_pool_pairs(x, -1), -2)


def is_max_pool3x3s2(m: nn.Module) -> bool:
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    return (
        type(m) is nn.MaxPool2d
        and pair(m.kernel_size) == (3, 3)
        and pair(m.stride) == (2, 2)
        and pair(m.padding) == (1, 1)
        and pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


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
    # bmm on the broadcast weight: its backward is two more bmm (matmul's broadcasting would copy).
    return [torch.bmm(weight[g].expand(n, channels, k), x[g]).view(n, channels, h, w) for g in range(groups)]


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D map stored channels_last (and not also plain contiguous, as 1x1 maps are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def avg_pool2x2(x: torch.Tensor, *, scale: float = 0.25) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` (floor mode) as two pairwise sums, 3x faster on NCHW maps on CPU.

    ``scale=1.0`` returns the 2x2 sums, for a caller that folds the 1/4 into a weight.
    """
    if is_channels_last(x) or x.dim() != 4:
        pooled = F.avg_pool2d(x, 2)
        return pooled if scale == 0.25 else pooled * (scale * 4.0)
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    rows = x[..., 0::2, :] + x[..., 1::2, :]  # contiguous rows first: the cheap direction
    sums = rows[..., 0::2] + rows[..., 1::2]
    # In place: an add's output is not saved for backward, so autograd allows it.
    return sums if scale == 1.0 else sums.mul_(scale)


class FastMaxPool3x3S2(nn.Module):
    """:func:`max_pool3x3s2` as a module, for inference copies; one pass of a C kernel (see
    ``._native``) on float32 CPU maps where it is built."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):
            return F.max_pool2d(x, 3, 2, 1)
        fused = native_max_pool3x3s2(x) if eager_inference(x) else None
        return fused if fused is not None else max_pool3x3s2(x)


def derived_from(module: nn.Module, slot: str, build: Callable[[], Any]) -> Any:
    """``build()``, cached on ``module`` and rebuilt whenever any of its tensors changes value.

    For objects derived from the weights (folded weights, folded copies). Validity is checked on
    the values themselves, against a snapshot taken at build time, so every way weights change
    is seen: optimizer steps, checkpoint loads, ``.data`` edits (which bypass version counters),
    device and dtype moves. The check reads the module's weights once per call; the temporal
    modules are small, so it costs far less than the work it saves.
    """
    tensors = _module_tensors(module)
    cached = module.__dict__.get(slot)
    if cached is not None and _same_values(cached[0], tensors):
        return cached[1]
    value = build()
    # A tuple in __dict__: nn.Module does not register it (no new state_dict keys or submodules).
    module.__dict__[slot] = (ByteSnapshot(tensors), value)
    return value


def _module_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module`` and its submodules, in a fixed order.

    What ``[*module.parameters(), *module.buffers()]`` holds (shared tensors may repeat), in a
    fifth of its time: this runs at every call of a cached path, and those generators' memo sets
    cost more than the check itself on modules of small tensors.
    """
    out: list[torch.Tensor] = []
    stack = [module]
    while stack:  # plain loops: generator expressions here measured 3x slower
        m = stack.pop()
        for p in m._parameters.values():
            if p is not None:
                out.append(p)
        for b in m._buffers.values():
            if b is not None:
                out.append(b)
        for child in m._modules.values():
            if child is not None:
                stack.append(child)
    return out


def _same_values(snapshot: ByteSnapshot, tensors: list[torch.Tensor]) -> bool:
    # Contiguous CPU tensors: one C call comparing bytes (equal bytes are equal values; a -0.0
    # that became 0.0 or a NaN's payload only costs a rebuild). Else one torch.equal per tensor,
    # measured cheaper than comparing concatenations.
    same = snapshot.matches(tensors)
    if same is not None:
        return same
    if len(snapshot.copies) != len(tensors):
        return False
    for old, new in zip(snapshot.copies, tensors):
        if old.shape != new.shape or old.dtype != new.dtype or old.device != new.device:
            return False
        if not torch.equal(old, new):
            return False
    return True


_FRESH_OUTPUT_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def _residual_adds_in_place(graph_module: nn.Module) -> None:
    """Turn ``a + b`` back into ``a.add_(b)`` where ``a`` is a fresh module output used only there.

    Tracing records the blocks' ``x += shortcut`` as an out-of-place add (a new full-size map).
    """
    graph = getattr(graph_module, "graph", None)
    if graph is None:
        return
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in (operator.add, torch.add) or len(node.args) != 2:
            continue
        first, second = node.args
        if node.kwargs or not isinstance(first, torch.fx.Node) or not isinstance(second, torch.fx.Node):
            continue
        # Only after modules that always allocate their output: an Identity, Dropout or
        # in-place activation may hand back a tensor someone else holds (even the caller's input).
        if first.op == "call_module" and len(first.users) == 1 and isinstance(
            graph_module.get_submodule(first.target), _FRESH_OUTPUT_MODULES
        ):
            node.op, node.target = "call_method", "add_"
    graph.lint()
    graph_module.recompile()


def inference_copy(module: nn.Module, example: torch.Tensor, *, channels_last: bool = False) -> nn.Module:
    """``module`` for inference with every conv+BN pair folded and 3x3/2 max-pools made fast.

    A copy made with ``torch.fx`` (same outputs up to rounding), cached on ``module`` by
    :func:`derived_from`, so it is made again whenever a parameter or buffer changes. Each new
    copy is checked once against ``module`` on ``example`` (tracing can freeze Python-level
    branches); a copy that fails or disagrees is not used. Returns ``module`` itself when it is
    in training mode or cannot be copied this way. With ``channels_last`` the copy runs in that
    memory format inside (oneDNN's convolutions on narrow maps are much faster there) and
    hands back maps in the layout it was given.
    """
    if any(m.training for m in module.modules()):
        return module
    slot = "_tdnzoo_inference_copy_cl" if channels_last else "_tdnzoo_inference_copy"
    return derived_from(module, slot, lambda: _checked_copy(module, example, channels_last))


class _InChannelsLast(nn.Module):
    """Runs ``inner`` (already in channels_last) on channels_last input; returns the caller's layout."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or is_channels_last(x):
            return self.inner(x)
        out = self.inner(x.contiguous(memory_format=torch.channels_last))
        return out.contiguous() if out.dim() == 4 else out


def _checked_copy(module: nn.Module, example: torch.Tensor, channels_last: bool = False) -> nn.Module:
    copy = _folded_copy(module)
    if copy is module:
        return module
    if channels_last:
        copy = _InChannelsLast(copy)
    try:
        with torch.no_grad():
            expected, got = module(example), copy(example)
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * scale + 1e-6):
            return module
    except Exception:  # a traced branch that does not hold at run time
        return module
    return copy


def _folded_copy(module: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    try:
        copy = fuse(module)  # deep copy with BN folded into the conv before it
    except Exception:  # not symbolically traceable: keep the module as it is
        return module
    for name, child in list(copy.named_modules()):
        if is_max_pool3x3s2(child):
            parent, _, leaf = name.rpartition(".")
            setattr(copy.get_submodule(parent) if parent else copy, leaf, FastMaxPool3x3S2())
    _residual_adds_in_place(copy)
    return copy.eval()


def upsample_width2x(small: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w] -> [N, C, h, 2w]``, each column twice: the width half of a nearest 2x
    upsampling, for callers that let row pairs take the rows by broadcasting."""
    n, c, h, w = small.shape
    return small.unsqueeze(-1).expand(n, c, h, w, 2).reshape(n, c, h, 2 * w)


def add_upsampled(x: torch.Tensor, small: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``x + up(small)`` with nearest upsampling to ``x``'s size.

    For an exact 2x upsampling only the width is upsampled into a (half-size) map and the row
    pairs of ``x`` take it by broadcasting, which keeps a contiguous inner loop (broadcasting
    both ways is several times slower on CPU); other sizes use ``F.interpolate`` (nearest, as
    the official code).
    """
    h, w = x.shape[-2:]
    sh, sw = small.shape[-2:]
    if (h, w) == (2 * sh, 2 * sw) and x.dim() == 4:
        n, c = x.shape[:2]
        x5 = x.view(n, c, sh, 2, w)
        wide = upsample_width2x(small).unsqueeze(3)
        return (x5.add_(wide) if inplace else x5 + wide).view(x.shape)
    up = F.interpolate(small, size=(h, w))
    return x.add_(up) if inplace else x + up
