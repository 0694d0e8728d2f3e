"""How tdnzoo reads a timm 2D CNN: its stages, its residual blocks, and where temporal modules go.

Stages come from timm's ``feature_info`` (module name and reduction of each stage output).
Paper numbering: stage ``k`` is the stage whose output has reduction ``2**k``; stage 2 (``layer1``
of a ResNet) is the first at reduction 4, and the stem is everything before it.

Insertion points come from small per-family rules (ResNet, RegNet, ConvNeXt, EfficientNet /
MobileNet, ByobNet), with a generic fallback: before the first convolution of the residual branch.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnsupportedBackboneError

__all__ = ["BackboneLayout", "Block", "InsertionRule", "TemporalInsert", "analyze_backbone", "SUPPORTED_FAMILIES"]


@dataclass(frozen=True)
class InsertionRule:
    """Where temporal modules enter one kind of residual block (attribute paths inside it).

    ``shift_before``: the op a TSM shift precedes (first op of the residual branch).
    ``difference_before``: the op the L-TDM + temporal conv precede (the first spatial conv,
    after the channel-reducing 1x1 when there is one, as in the official TDN bottleneck).
    """

    shift_before: str
    difference_before: str


# Keyed by the block class name; the module check keeps unrelated classes of the same name out.
_RULES: dict[tuple[str, str], InsertionRule] = {
    ("timm.models.resnet", "Bottleneck"): InsertionRule("conv1", "conv2"),
    ("timm.models.resnet", "BasicBlock"): InsertionRule("conv1", "conv1"),
    ("timm.models.regnet", "Bottleneck"): InsertionRule("conv1", "conv2"),
    ("timm.models.convnext", "ConvNeXtBlock"): InsertionRule("conv_dw", "conv_dw"),
    ("timm.models._efficientnet_blocks", "InvertedResidual"): InsertionRule("conv_pw", "conv_dw"),
    ("timm.models._efficientnet_blocks", "DepthwiseSeparableConv"): InsertionRule("conv_dw", "conv_dw"),
    ("timm.models._efficientnet_blocks", "EdgeResidual"): InsertionRule("conv_exp", "conv_exp"),
    ("timm.models._efficientnet_blocks", "UniversalInvertedResidual"): InsertionRule("dw_start", "dw_start"),
    ("timm.models.byobnet", "BottleneckBlock"): InsertionRule("conv1_1x1", "conv2_kxk"),
    ("timm.models.byobnet", "BasicBlock"): InsertionRule("conv1_kxk", "conv1_kxk"),
    ("timm.models.byobnet", "DarkBlock"): InsertionRule("conv1_1x1", "conv2_kxk"),
    ("timm.models.byobnet", "EdgeBlock"): InsertionRule("conv1_kxk", "conv1_kxk"),
}

SUPPORTED_FAMILIES = (
    "ResNet / ResNeXt / ResNet-D / SE-ResNet (timm.models.resnet)",
    "RegNet X/Y (timm.models.regnet)",
    "ConvNeXt (timm.models.convnext)",
    "EfficientNet / EfficientNetV2 / MobileNetV2-V4 / MnasNet (timm efficientnet blocks)",
    "ByobNet family: RepVGG-free nets, GerNet, ResNet-RS-like (timm.models.byobnet)",
    "other hierarchical CNNs whose residual blocks are named *Block / *Bottleneck / *Residual / *Basic "
    "(generic rule: before the first convolution of the residual branch)",
)

# Children of a block that are not its residual branch.
_NOT_BRANCH = re.compile(r"(shortcut|downsample|skip|identity|attn|se$|drop_path)")
_GENERIC_BLOCK = re.compile(r"(Block|Bottleneck|Bottle2neck|Residual|Basic)$")
# Blocks that concatenate instead of adding a residual: a shift there has no identity path.
_NOT_RESIDUAL = re.compile(r"Dense")
_HEAD_NAMES = {"global_pool", "head", "fc", "classifier", "head_drop", "flatten", "pre_logits"}


class TemporalInsert(nn.Module):
    """Runs ``temporal`` right before ``inner``, the op it was inserted in front of."""

    def __init__(self, temporal: nn.Module, inner: nn.Module) -> None:
        super().__init__()
        self.temporal = temporal
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.temporal(x))


@dataclass
class Block:
    """A residual block: its module path in the backbone, its stage and its insertion rule."""

    path: str
    module: nn.Module
    stage: int
    index_in_stage: int
    rule: InsertionRule


@dataclass
class BackboneLayout:
    """The forward order of a backbone's ``forward_features``, split at the paper's stages."""

    name: str
    stem: list[tuple[str, nn.Module]]
    first_stage: tuple[str, nn.Module]
    late: list[tuple[str, nn.Module]]
    stage_of: dict[str, int]
    min_size: int
    blocks: list[Block] = field(default_factory=list)

    def blocks_in(self, stages: tuple[int, ...] | list[int]) -> list[Block]:
        return [b for b in self.blocks if b.stage in stages]

    def stage_sizes(self) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for b in self.blocks:
            sizes[b.stage] = sizes.get(b.stage, 0) + 1
        return sizes


def _unsupported(name: str, why: str) -> UnsupportedBackboneError:
    families = "\n  - ".join(SUPPORTED_FAMILIES)
    return UnsupportedBackboneError(
        f"backbone '{name}' cannot be used by tdnzoo: {why}.\n"
        f"tdnzoo needs a hierarchical timm 2D CNN with residual blocks. Supported:\n  - {families}"
    )


def _rule_for(module: nn.Module) -> InsertionRule | None:
    cls = type(module)
    rule = _RULES.get((cls.__module__, cls.__name__))
    if rule is not None:
        return rule
    if not _GENERIC_BLOCK.search(cls.__name__) or _NOT_RESIDUAL.search(cls.__name__):
        return None
    # Generic fallback: the first convolution (in registration order) of the residual branch.
    for child_name, child in module.named_children():
        if _NOT_BRANCH.search(child_name):
            continue
        if isinstance(child, nn.Conv2d) or any(isinstance(m, nn.Conv2d) for m in child.modules()):
            return InsertionRule(child_name, child_name)
    return None


def _forward_sequence(model: nn.Module, stage_paths: list[str], name: str) -> list[tuple[str, nn.Module]]:
    """Top-level modules in registration order until the head, expanded down to the stages."""
    head = set(_HEAD_NAMES)
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(classifier, str):
        head.add(classifier.split(".")[0])
    seq: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> bool:
        for child_name, child in module.named_children():
            path = prefix + child_name
            if not prefix and child_name in head:
                return True
            if any(p.startswith(path + ".") for p in stage_paths):
                if not isinstance(child, (nn.Sequential, nn.ModuleList)):
                    raise _unsupported(name, f"its stages sit inside '{path}', which is not a sequence")
                walk(child, path + ".")
            else:
                seq.append((path, child))
        return False

    walk(model, "")
    return seq


def _run(seq: list[tuple[str, nn.Module]], x: torch.Tensor) -> torch.Tensor:
    for _, module in seq:
        x = module(x)
    return x


def _check_sequence(model: nn.Module, seq: list[tuple[str, nn.Module]], min_size: int, name: str) -> None:
    """The flattened sequence must compute ``forward_features`` exactly; else we cannot split it."""
    size = max(64, 2 * min_size)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model.forward_features(x)
            got = _run(seq, x)
    except Exception as exc:  # a module that needs more than its predecessor's output
        raise _unsupported(name, f"its forward_features is not a plain sequence of modules ({exc})") from exc
    finally:
        model.train(was_training)
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=1e-5, rtol=1e-4):
        raise _unsupported(name, "its forward_features is not a plain sequence of its modules")


def analyze_backbone(model: nn.Module, name: str | None = None, *, check: bool = True) -> BackboneLayout:
    """Read a timm model's stages and residual blocks.

    Args:
        model: a timm 2D CNN (with ``feature_info``, ``forward_features``, ``forward_head``).
        name: used in error messages; defaults to the model's class name.
        check: run a small input through the split and compare with ``forward_features``.

    Raises:
        UnsupportedBackboneError: naming the backbone and what tdnzoo supports.
    """
    name = name or getattr(model, "default_cfg", {}).get("architecture") or type(model).__name__
    info = getattr(model, "feature_info", None)
    if not info or not all(hasattr(model, m) for m in ("forward_features", "forward_head")):
        raise _unsupported(name, "it has no timm feature_info / forward_features / forward_head")
    entries = [(f["module"], int(f["reduction"])) for f in info]
    reductions = [r for _, r in entries]
    if any(b <= a for a, b in zip(reductions, reductions[1:])) or 4 not in reductions:
        raise _unsupported(name, f"its feature reductions {reductions} are not a 2D CNN pyramid (2, 4, 8, ...)")
    if any(r & (r - 1) for r in reductions):
        raise _unsupported(name, f"its feature reductions {reductions} are not powers of two")
    paths = [m for m, _ in entries]
    seq = _forward_sequence(model, paths, name)
    seq_names = [p for p, _ in seq]
    missing = [p for p in paths if p not in seq_names]
    if missing:
        raise _unsupported(name, f"its stage modules {missing} are not in the forward order")

    # Stage of every module: modules up to and including a feature entry belong to its stage.
    stage_of: dict[str, int] = {}
    pending: list[str] = []
    reduction_of = dict(entries)
    for path in seq_names:
        pending.append(path)
        if path in reduction_of:
            stage = int(math.log2(reduction_of[path]))
            for p in pending:
                stage_of[p] = stage
            pending = []
    for p in pending:  # after the last stage: final convs / norms, same stage as the last
        stage_of[p] = int(math.log2(reductions[-1]))

    first_path = next(m for m, r in entries if r == 4)
    first_index = seq_names.index(first_path)
    min_size = reductions[-1]
    if check:
        _check_sequence(model, seq, min_size, name)

    layout = BackboneLayout(
        name=name,
        stem=seq[:first_index],
        first_stage=seq[first_index],
        late=seq[first_index + 1 :],
        stage_of=stage_of,
        min_size=min_size,
    )
    for path, module in seq[first_index:]:
        layout.blocks.extend(_find_blocks(path, module, stage_of[path]))
    # Block indices count within each stage, across modules of the same stage.
    counts: dict[int, int] = {}
    for b in layout.blocks:
        b.index_in_stage = counts.get(b.stage, 0)
        counts[b.stage] = b.index_in_stage + 1
    return layout


def _find_blocks(path: str, module: nn.Module, stage: int) -> list[Block]:
    rule = _rule_for(module)
    if rule is not None:
        return [Block(path, module, stage, 0, rule)]
    found = []
    for child_name, child in module.named_children():
        found.extend(_find_blocks(f"{path}.{child_name}", child, stage))
    return found


def block_has_residual(block: nn.Module) -> bool:
    """False for blocks timm builds without a skip (stride or channel change in MobileNets)."""
    has_skip = getattr(block, "has_skip", None)
    if has_skip is not None:
        return bool(has_skip)
    if hasattr(block, "shortcut") and block.shortcut is None:
        return False
    return True


def op_channels(op: nn.Module) -> int:
    """Input channels of an op (a conv, or a conv-norm-act wrapper)."""
    channels = getattr(op, "in_channels", None)
    if isinstance(channels, int):
        return channels
    for m in op.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise UnsupportedBackboneError(f"cannot tell the input channels of {type(op).__name__}")


def insert_before(block: nn.Module, attr_path: str, make: "callable") -> nn.Module:
    """Replace ``block.<attr_path>`` by ``TemporalInsert(make(channels), op)``; returns the insert."""
    parent_path, _, leaf = attr_path.rpartition(".")
    parent = block.get_submodule(parent_path) if parent_path else block
    op = getattr(parent, leaf)
    if isinstance(op, TemporalInsert):
        raise UnsupportedBackboneError(f"'{attr_path}' already has a temporal module")
    insert = TemporalInsert(make(op_channels(op)), op)
    setattr(parent, leaf, insert)
    return insert


def copy_sequence(seq: list[tuple[str, nn.Module]]) -> nn.Sequential:
    """A deep copy of modules as one ``nn.Sequential``, names kept ('.' becomes '_')."""
    from collections import OrderedDict

    return nn.Sequential(OrderedDict((p.replace(".", "_"), copy.deepcopy(m)) for p, m in seq))
