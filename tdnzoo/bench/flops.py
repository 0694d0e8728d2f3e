"""FLOPs and parameters of a video model, per view (one clip, one crop), with fvcore.

Convention (fvcore's and the papers'): one multiply-add counts as one flop; convolutions,
linear layers, norms, upsampling and adaptive pooling are counted; element-wise ops are not.
The element-wise arithmetic of the temporal modules (frame and feature differences, the
temporal conv's multiply-adds, L-TDM's gating) is counted separately and shown beside the
total, so that nothing is silently dropped. The TSM shift moves memory and does no arithmetic.

fvcore has no counter for some ops that do the work it counts in another form: fused attention
(``scaled_dot_product_attention``: the ``q @ k^T`` and ``attn @ v`` matmuls it counts when timm runs
attention unfused), LSTMs, ``padding='same'`` convolutions, fixed average pooling and ``mean`` (as its
adaptive pooling), bicubic resampling and RMS norm. :func:`_extra_handles` counts them as their unfused
or sibling op, so that a model counts the same whichever form timm picks. What fvcore still skips
(activations, softmax, memory ops) is listed with each count (``FlopCount.uncounted``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..layers import TemporalConv
from ..models import create_model
from ..models.checkpoint import classifier_name

__all__ = ["FlopCount", "count_flops", "count_params", "flop_breakdown", "fvcore_nn"]

# Element-wise arithmetic, counted one flop per output element (a multiply-add is one flop).
_ELEMENTWISE_OPS = (
    "aten::add",
    "aten::add_",
    "aten::sub",
    "aten::rsub",
    "aten::mul",
    "aten::mul_",
    "aten::div",
    "aten::addcmul",
    "aten::addcmul_",
    "aten::sigmoid",
)


def _attention_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)`` as the matmuls it fuses: ``q @ k^T`` and ``attn @ v``.

    fvcore counts the unfused form's two matmuls (one multiply-add per element of each product), so a
    model counts the same with timm's fused attention as without it; the softmax and the scaling
    are element-wise and, as there, not counted.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, queries, dim = q
    keys, value_dim = k[-2], v[-1]
    return int(math.prod(batch)) * queries * keys * (dim + value_dim)


def _lstm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::lstm`` (Sequencer's token mixer) as its gates' matmuls: per step, direction and layer,
    ``4 * hidden * (input + hidden)`` multiply-adds, as fvcore counts the same linear layers; the
    gates' element-wise products are not counted. Weights are not traced, so sizes come from the
    input, the cell state and the op's constants."""
    from fvcore.nn.jit_handles import get_shape

    x = get_shape(inputs[0])
    cell = get_shape(next(iter(inputs[1].node().inputs())))  # hx = [h0, c0], each [layers * dirs, N, hidden]
    num_layers, bidirectional = inputs[4].toIValue(), inputs[7].toIValue()
    directions, hidden = (2 if bidirectional else 1), cell[-1]
    steps = int(math.prod(x[:-1]))  # batch x time, whichever comes first
    first = 4 * hidden * (x[-1] + hidden)
    later = 4 * hidden * (directions * hidden + hidden)
    return steps * directions * (first + (num_layers - 1) * later)


def _same_padding_conv_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::_convolution_mode``: a convolution with ``padding='same'`` or ``'valid'`` (ConvMixer's), which
    fvcore's ``_convolution`` counter does not see; counted by that counter's formula."""
    from fvcore.nn.jit_handles import conv_flop_count, get_shape

    return conv_flop_count(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]), transposed=False)


def _per_element(input_cost: int, output_cost: int) -> Any:
    """fvcore's own per-element counter (``adaptive_avg_pool2d`` and the upsamplings use it)."""
    from fvcore.nn.jit_handles import elementwise_flop_counter

    return elementwise_flop_counter(input_cost, output_cost)


def _extra_handles() -> dict[str, Any]:
    """Counters for ops fvcore skips that do work it counts in another form (the family survey's
    attention, recurrent, pooling, resampling and norm ops; each above 0.1% of some family's model):
    counted as fvcore counts their unfused or sibling op."""
    from fvcore.nn.jit_handles import norm_flop_counter

    return {
        "aten::scaled_dot_product_attention": _attention_handle,  # = the unfused q @ k^T and attn @ v
        "aten::lstm": _lstm_handle,  # = its gates' linear layers
        "aten::_convolution_mode": _same_padding_conv_handle,  # = aten::_convolution
        "aten::avg_pool2d": _per_element(1, 0),  # as adaptive_avg_pool2d: one per input element
        "aten::avg_pool1d": _per_element(1, 0),
        "aten::mean": _per_element(1, 0),  # timm pools with x.mean((2, 3)) or adaptive_avg_pool2d, by flag
        "aten::upsample_bicubic2d": _per_element(0, 16),  # as upsample_bilinear2d's 4 taps: 16 taps
        "aten::upsample_linear1d": _per_element(0, 2),
        "aten::rms_norm": norm_flop_counter(2),  # as layer_norm (weight at argument 2)
    }


_GROUPS = ("backbone", "S-TDM", "L-TDM", "temporal conv", "head")


@dataclass
class FlopCount:
    """GFLOPs of one view, split by part of the model."""

    model: str
    num_segments: int
    frames_per_segment: int
    input_size: int
    gflops: float
    elementwise_gflops: float
    params: int
    groups: dict[str, float] = field(default_factory=dict)
    elementwise_groups: dict[str, float] = field(default_factory=dict)
    #: ops fvcore has no counter for, with their number of calls: element-wise by the convention
    #: (activations, softmax, pooling) unless one does multiply-adds, which would then be missing.
    uncounted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A markdown table of the breakdown."""
        rows = [
            f"{self.model}: {self.num_segments} segments x {self.frames_per_segment} frames, "
            f"{self.input_size}x{self.input_size}, one view",
            "",
            "| part | GFLOPs (fvcore) | element-wise GFLOPs (not in fvcore's total) |",
            "| --- | ---: | ---: |",
        ]
        for name in _GROUPS:
            rows.append(f"| {name} | {self.groups.get(name, 0.0):.3f} | {self.elementwise_groups.get(name, 0.0):.4f} |")
        rows.append(f"| **total** | **{self.gflops:.2f}** | {self.elementwise_gflops:.4f} |")
        rows.append("")
        rows.append(f"params: {self.params:,}. One multiply-add = one flop (fvcore's convention).")
        if self.uncounted:
            ops = ", ".join(f"{op.removeprefix('aten::')} x{calls}" for op, calls in self.uncounted.items())
            rows.append(f"not counted (no fvcore counter: element-wise or memory ops, calls per view): {ops}.")
        return "\n".join(rows)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not), buffers excluded."""
    return sum(p.numel() for p in model.parameters())


def fvcore_nn() -> Any:
    """``fvcore.nn``, imported without its import-time notice: its focal-loss module (which tdnzoo does
    not use) calls ``torch.jit.script``, and recent torch warns that scripting is deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        import fvcore.nn
    return fvcore.nn


def _elementwise_handle(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(outputs[0])
    return int(math.prod(shape)) if shape else 1


def _resolve(model: nn.Module | str, num_segments: int | None) -> nn.Module:
    if isinstance(model, str):
        return create_model(model, num_segments=num_segments)
    if num_segments is not None and num_segments != getattr(model, "num_segments", num_segments):
        raise ValueError(
            f"the model was built for {model.num_segments} segments, got num_segments={num_segments}; "
            "pass a model name to build it at another segment count"
        )
    return model


def _group_of(module_name: str, head: str) -> str:
    if module_name.startswith("short_term"):
        return "S-TDM"
    if ".temporal.ltdm" in module_name:
        return "L-TDM"
    if ".temporal.tconv" in module_name:
        return "temporal conv"
    if module_name == f"backbone.{head}" or module_name.startswith(f"backbone.{head}."):
        return "head"
    return "backbone"


def flop_breakdown(model: nn.Module | str, num_segments: int | None = None, input_size: int | None = None) -> FlopCount:
    """GFLOPs of one view split into backbone, S-TDM, L-TDM, temporal conv and head.

    Args:
        model: a tdnzoo model or a model name (built at ``num_segments``).
        num_segments: segments per clip; defaults to the model's.
        input_size: frame height and width; defaults to the model's ``pretrained_cfg`` (224).

    Example:
        >>> flop_breakdown("tdn_resnet50", input_size=224).gflops  # doctest: +SKIP
        35.86
    """
    FlopCountAnalysis = fvcore_nn().FlopCountAnalysis

    model = _resolve(model, num_segments)
    size = int(input_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    x = torch.zeros(1, model.num_frames, 3, size, size)
    was_training = model.training
    model.eval()
    # The temporal conv is counted as the official code's depthwise Conv1d (kernel 3: three
    # multiply-adds per output element), which fvcore counts; ours is written element-wise.
    temporal_conv_outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _args, out: temporal_conv_outputs.append(int(out.numel())))
             for m in model.modules() if isinstance(m, TemporalConv)]
    try:
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle(**{op: _elementwise_handle for op in _ELEMENTWISE_OPS}, **_extra_handles())
        # fvcore's notices go to the log once per op; the ops it could not count are listed in the result.
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        per_module = analysis.by_module_and_operator()
        uncounted = dict(sorted(analysis.unsupported_ops().items()))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()

    elementwise_names = {op.split("::", 1)[1] for op in _ELEMENTWISE_OPS}
    head = classifier_name(model)
    # fvcore's per-module counts include children: take each part's outermost modules and
    # leave the rest of the whole model to the backbone.
    parts = {
        "S-TDM": [n for n in per_module if n == "short_term"],
        "L-TDM": [n for n in per_module if n.endswith(".temporal.ltdm")],
        "temporal conv": [n for n in per_module if n.endswith(".temporal.tconv")],
        "head": [n for n in per_module if n == f"backbone.{head}"],
    }

    def split(counter: dict[str, int]) -> tuple[float, float]:
        ew = sum(v for op, v in counter.items() if op in elementwise_names)
        return (sum(counter.values()) - ew) / 1e9, ew / 1e9

    groups: dict[str, float] = {}
    elementwise: dict[str, float] = {}
    for part, module_names in parts.items():
        pairs = [split(per_module[n]) for n in module_names]
        groups[part] = sum(p[0] for p in pairs)
        elementwise[part] = sum(p[1] for p in pairs)
    whole, whole_ew = split(per_module[""])
    groups["backbone"] = whole - sum(groups.values())
    elementwise["backbone"] = whole_ew - sum(elementwise.values())
    if temporal_conv_outputs:
        groups["temporal conv"] += 3 * sum(temporal_conv_outputs) / 1e9
        elementwise["temporal conv"] = 0.0
    total = sum(groups.values())
    # Element-wise work outside the temporal modules (residual adds) is not what we report.
    temporal_elementwise = {k: v for k, v in elementwise.items() if k not in ("backbone", "head")}
    return FlopCount(
        model=str(model.pretrained_cfg.get("architecture", type(model).__name__)),
        num_segments=model.num_segments,
        frames_per_segment=model.frames_per_segment,
        input_size=size,
        gflops=total,
        elementwise_gflops=sum(temporal_elementwise.values()),
        params=count_params(model),
        groups=groups,
        elementwise_groups=temporal_elementwise,
        uncounted=uncounted,
    )


def count_flops(model: nn.Module | str, num_segments: int | None = None, input_size: int | None = None) -> float:
    """GFLOPs of one view (one clip, one crop) as fvcore counts them.

    One multiply-add is one flop; element-wise ops are excluded (see :func:`flop_breakdown`
    for them and for the per-module split).

    Example:
        >>> round(count_flops("tsn_resnet50", num_segments=8, input_size=224), 1)  # doctest: +SKIP
        32.9
    """
    return flop_breakdown(model, num_segments, input_size).gflops
