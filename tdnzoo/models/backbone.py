"""How tdnzoo reads a timm backbone: its stages, its blocks and their temporal positions, its stem.

Everything is read from a dry run of the backbone's own ``forward_features`` (see
:mod:`tdnzoo.models.probe`), never from a rebuilt forward:

- **Stages** come from timm's ``feature_info``: paper stage ``k`` ends at the feature module of
  reduction ``2**k`` (stage 2 is ResNet's ``layer1``); stages past the fifth count as the fifth.
- **Blocks** are found by :mod:`tdnzoo.models.blocks`, the op each temporal module goes at by
  :mod:`tdnzoo.models.placement`; per-family rules (:mod:`tdnzoo.models.families`) override the
  placement where the generic rule gets a family wrong, and pin the official one on ResNet.
- **The stem** is the chain of modules from the frames to the first stage, each consuming what the
  previous one returned; S-TDM copies it. Its fusion points are the maps after the stem and after
  the first stage (a patch embedding and no stage for token models).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnsupportedBackboneError
from .blocks import find_blocks, has_residual
from .families import PlacementRule, placement_rule
from .ops import is_spatial_leaf
from .placement import DRY_RUN_BATCH, PlacementContext, Position, difference_position, lift, shift_position
from .probe import Call, Trace, attach_second_run, fingerprint_of, trace_forward

__all__ = ["BackboneLayout", "Block", "Position", "analyze_backbone", "dry_run_size", "family_of"]



@dataclass
class Block:
    """A block of the backbone: its path, paper stage, index in that stage and temporal positions."""

    path: str
    module: nn.Module
    stage: int
    reduction: float
    index_in_stage: int
    residual: bool
    shift: Position | None
    difference: Position | None


@dataclass
class BackboneLayout:
    """What tdnzoo read from a backbone's dry run.

    ``size``: the frame size it ran at; ``fixed``: the backbone takes that size only.
    """

    name: str
    family: str
    size: int
    min_size: int
    fixed: bool = False
    blocks: list[Block] = field(default_factory=list)
    stem: list[tuple[str, nn.Module]] = field(default_factory=list)
    first_stage: tuple[str, nn.Module] | None = None
    fusion_points: list[Position] = field(default_factory=list)
    tuple_outputs: set[str] = field(default_factory=set)
    stem_problem: str | None = None
    attention: frozenset[int] = frozenset()  # ids of modules seen computing an attention

    def blocks_in(self, stages: tuple[int, ...] | list[int]) -> list[Block]:
        return [b for b in self.blocks if b.stage in stages]

    def stage_sizes(self) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for b in self.blocks:
            sizes[b.stage] = sizes.get(b.stage, 0) + 1
        return sizes


def family_of(model: nn.Module) -> str:
    """The timm module that defines a model's class (``resnet``, ``vision_transformer``, ...)."""
    return type(model).__module__.rsplit(".", 1)[-1]


def unsupported(name: str, family: str, why: str) -> UnsupportedBackboneError:
    return UnsupportedBackboneError(f"backbone '{name}' (timm family '{family}') cannot be used by tdnzoo: {why}")


def dry_run_size(model: nn.Module) -> tuple[int, bool]:
    """The frame size of the dry run and whether the model takes only that size.

    Models with a fixed input size (ViTs, Swin, MaxViT, ...) run at the size they were built for;
    the others at a small size, twice their deepest reduction and at least 64.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("fixed_input_size"):
        # The size it was built for (timm keeps it on the model or its patch embedding), else its cfg's.
        for module in model.modules():
            size = getattr(module, "img_size", None)
            if isinstance(size, int) or (isinstance(size, (tuple, list)) and size and isinstance(size[-1], int)):
                return int(size if isinstance(size, int) else size[-1]), True
        return int(cfg.get("input_size", (3, 224, 224))[-1]), True
    reductions = [int(f["reduction"]) for f in getattr(model, "feature_info", None) or []]
    size = max(64, 2 * max(reductions, default=32))
    embed = next((m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "patch_embed"), None)
    proj = getattr(embed, "proj", None)
    if isinstance(proj, nn.Conv2d) and proj.kernel_size == proj.stride and size % proj.stride[0]:
        size = proj.stride[0] * -(-size // proj.stride[0])  # a multiple of a patch size such as 14
    return size, False


# -- stages, stem and fusion points -----------------------------------------------------------


@dataclass
class _Feature:
    """A feature_info entry as it ran: its reduction, its first and last call, and its own call if it is called."""

    reduction: int
    start: int
    end: int
    call: Call | None


def _features(model: nn.Module, trace: Trace) -> list[_Feature]:
    """The feature modules that ran, in order. A container that is iterated rather than called
    (CoaT's block lists) spans the calls of its children."""
    out = []
    for info in getattr(model, "feature_info", None) or []:
        path = info["module"]
        try:
            module = model.get_submodule(path) if path else None
        except AttributeError:
            continue
        calls = trace.calls_of(module) if module is not None else []
        if len(calls) == 1:
            out.append(_Feature(int(info["reduction"]), calls[0].index, calls[0].exit_index, calls[0]))
        elif not calls and path:
            inside = [c for c in trace.calls if c.path.startswith(path + ".")]
            if inside:
                out.append(_Feature(int(info["reduction"]), min(c.index for c in inside),
                                    max(c.exit_index for c in inside), None))
    return sorted(out, key=lambda f: f.end)


def _stage_number(reduction: float) -> int:
    return min(5, max(1, round(math.log2(max(reduction, 1.0)))))


def _stem_chain(trace: Trace, first_stage: Call | None, blocks: list[Block], through: bool = False) -> tuple[list[Call], bool]:
    """Modules from the frames towards the first stage, each taking what the last returned, up to the first block.

    Returns the chain and whether it ends exactly at the first stage's input. With ``through``,
    the first stage ends the chain as its last module (a stem that is itself a feature module).
    """
    block_modules = {id(b.module) for b in blocks}
    tensor, fingerprint = trace.image, fingerprint_of(trace.image)
    chain: list[Call] = []
    level = trace.roots
    while True:
        for call in level:
            if first_stage is not None and first_stage.within(call):
                if call is first_stage:
                    if through and call.consumes(tensor, fingerprint) and call.plain_input:
                        return [*chain, call], False
                    return chain, call.consumes(tensor, fingerprint)
                level = call.children
                break
            if id(call.module) in block_modules:
                return chain, False
            if any(id(c.module) in block_modules for c in call.descendants()):
                level = call.children  # a module holding the blocks (an encoder): its stem is inside
                break
            if not (call.consumes(tensor, fingerprint) and call.plain_input):
                return chain, False
            chain.append(call)
            tensor, fingerprint = call.output, call.output_print
        else:
            return chain, False


def _fusion_point(call: Call, ctx: PlacementContext) -> Position | None:
    """The deepest module returning ``call``'s output with its final value (parameter-free in most stems)."""
    producers = [p for p in ctx.trace.producers(call.output, call.output_print, call) if ctx.trace.called_once(p.module)]
    for producer in reversed(producers):
        if producer is not call and (lift(producer, call) is not producer or not producer.plain_output):
            continue  # inside a reparameterizable module, or returning more: wrap the outer module instead
        layout = ctx.layout(producer, output=True)
        if layout is not None:
            return Position(producer.module, producer.path, layout, after=True)
    return None


def _analyze_stem(trace: Trace, ctx: PlacementContext, features: list[_Feature], layout: BackboneLayout) -> None:
    first = next((f for f in features if f.reduction >= 4), None)
    first_stage = first.call if first is not None else None
    chain, reached = _stem_chain(trace, first_stage, layout.blocks)
    if not chain:  # the first feature module is the stem itself (a DCT or patchifying stem)
        chain, reached = _stem_chain(trace, first_stage, layout.blocks, through=True)
    if not chain:
        layout.stem_problem = "no module takes the frames alone at the start of its forward"
        return
    stem_point = _fusion_point(chain[-1], ctx)
    if stem_point is None:
        layout.stem_problem = "the stem's output is not a per-frame map"
        return
    layout.stem = [(c.path, c.module) for c in chain]
    layout.tuple_outputs = {c.path for c in chain if not c.plain_output}
    layout.fusion_points = [stem_point]
    if reached and first_stage is not None and first.reduction == 4 and first_stage.plain_input:
        stage_point = _fusion_point(first_stage, ctx)
        if stage_point is not None:
            layout.first_stage = (first_stage.path, first_stage.module)
            layout.fusion_points.append(stage_point)


def _dry_runs(model: nn.Module, name: str, family: str, built_size: int | None) -> tuple[Trace, int, bool, bool]:
    """Trace ``forward_features`` at the dry-run size (else twice that, else the model's own size), and
    once more at another size when the model takes any (to tell grid dimensions from channels).

    Returns the trace, its frame size, whether the model takes that size only, and whether a
    smaller size failed (the frame size is then the smallest known to work).
    """
    size, fixed = dry_run_size(model)
    if built_size is not None and fixed:
        size = built_size
    own = int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])

    def run(side: int) -> Trace:
        x = torch.randn(DRY_RUN_BATCH, 3, side, side, generator=torch.Generator().manual_seed(0))
        return trace_forward(model, model.forward_features, x)

    trace, error = None, None
    for attempt in dict.fromkeys((size, 2 * size, own)) if not fixed else (size,):
        try:
            trace = run(attempt)
        except Exception as exc:  # noqa: BLE001 - any failure: try the model's own size, then report
            error = exc
            continue
        fixed = fixed or attempt == own != size  # only its own size worked: treat it as fixed
        smaller_failed = attempt != size
        size = attempt
        break
    if trace is None:
        raise unsupported(name, family, f"its forward_features fails on {size}x{size} frames ({error})")
    if not fixed:
        for other in (size * 3 // 2, size * 2):
            try:
                if attach_second_run(trace, run(other)):
                    break
            except Exception:  # noqa: BLE001 - a size it does not take: try the next
                continue
    return trace, size, fixed, smaller_failed


def _rule_positions(call: Call, rule: PlacementRule, ctx: PlacementContext) -> tuple[Position | None, Position | None]:
    """The positions a per-family rule names (attribute paths inside the block)."""
    def at(attr: str) -> Position | None:
        target = next((c for c in call.descendants() if c.path == f"{call.path}.{attr}"), None)
        return ctx.position(target, after=rule.after) if target is not None else None

    return at(rule.shift), at(rule.difference)


def _blocks(trace: Trace, ctx: PlacementContext, features: list[_Feature], family: str) -> list[Block]:
    """The blocks after the stem with their paper stage (from feature_info, else from their map size)."""
    start = next((f.start for f in features if f.reduction >= 4), features[0].start if features else 0)
    found: list[Call] = []
    for root in trace.roots:
        found.extend(b for b in find_blocks(root, ctx) if b.index >= start and b not in found)
    if not found:  # a plain stack of convolutions (VGG): each spatial conv is a block, with no residual
        found = [c for c in trace.calls if c.index >= start and isinstance(c.module, nn.Conv2d) and is_spatial_leaf(c.module)]
    blocks: list[Block] = []
    counts: dict[int, int] = {}
    for call in found:
        if not trace.called_once(call.module):
            continue
        grid = ctx.layout(call, output=True) or ctx.layout(call)
        feature = next((f.reduction for f in features if f.end >= call.exit_index), None)
        reduction = ctx.size / grid.grid[0] if grid is not None else float(feature or 32)
        stage = _stage_number(feature or reduction)
        index = counts.get(stage, 0)
        counts[stage] = index + 1
        rule = placement_rule(family, type(call.module).__name__)
        if rule is not None:
            shift, difference = _rule_positions(call, rule, ctx)
        else:
            shift, difference = shift_position(call, ctx), difference_position(call, ctx)
        blocks.append(Block(call.path, call.module, stage, reduction, index, has_residual(call), shift, difference))
    return blocks


def analyze_backbone(model: nn.Module, name: str | None = None, *, img_size: int | None = None) -> BackboneLayout:
    """Read a timm model's stages, blocks, temporal positions, stem and fusion points from a dry run.

    Args:
        model: a timm model with ``feature_info``, ``forward_features`` and ``forward_head``.
        name: used in error messages; defaults to the model's architecture name.
        img_size: the frame size the model was built for (timm's ``img_size``), for backbones that
            take one size only and do not record it.

    Raises:
        UnsupportedBackboneError: naming the backbone, its timm family and the reason.
    """
    family = family_of(model)
    name = name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    if not getattr(model, "feature_info", None) or not all(hasattr(model, m) for m in ("forward_features", "forward_head")):
        raise unsupported(name, family, "it has no timm feature_info / forward_features / forward_head")
    trace, size, fixed, smaller_failed = _dry_runs(model, name, family, img_size)
    prefix = getattr(model, "num_prefix_tokens", None)
    ctx = PlacementContext(trace, size, int(prefix) if isinstance(prefix, int) else None)
    # Feature modules whose names do not resolve (a typo in a timm family's feature_info) leave the
    # stages to the blocks' map sizes.
    features = _features(model, trace)
    reductions = [f.reduction for f in features] or [32]
    min_size = size if fixed or smaller_failed else max(reductions)
    layout = BackboneLayout(name=name, family=family, size=size, min_size=min_size, fixed=fixed,
                            attention=trace.attention)
    layout.blocks = _blocks(trace, ctx, features, family)
    _analyze_stem(trace, ctx, features, layout)
    return layout
