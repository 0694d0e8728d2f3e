"""How tdnzoo reads a timm backbone: its stages, its blocks, where temporal modules go, its stem.

Everything is read from one dry run of the backbone's own ``forward_features`` (see
:mod:`tdnzoo.models.probe`), never from a rebuilt forward:

- **Stages** come from timm's ``feature_info``: paper stage ``k`` ends at the feature module of
  reduction ``2**k`` (stage 2 is ResNet's ``layer1``); stages past the fifth count as the fifth.
- **Blocks** are the smallest repeated units of the stages: modules with two or more
  convolutions / linear layers, one of which mixes positions (a spatial conv, attention, pooling),
  found top-down through stage containers (a sequence of blocks, a DenseNet block of layers, an
  HRNet module of branches).
- **Where a temporal module goes in a block** (the op it precedes, taken from the call order and
  from which tensor each op actually received):
  the *shift* precedes the first op of the residual branch, normalisations excepted (the op that
  consumes the block's input: ResNet's ``conv1``; after a pre-norm: a transformer's token mixer);
  the *L-TDM + temporal conv* precede the first op that mixes positions (ResNet's ``conv2``, a
  depthwise conv, attention), on the full map it receives. Where that op sees a split or windows
  of the map, the module goes on the map before the split (after the op that produced it). A block
  whose input feeds several branches (Inception, RepVGG), and ops inside a reparameterizable
  module, get the module in front of the whole block / module, which reparameterization keeps.
- **The stem** is the chain of modules from the frames to the first stage, each consuming what the
  previous one returned; S-TDM copies it. Its fusion points are the maps after the stem and after
  the first stage (a patch embedding and no stage for token models).

Per-family rules (:mod:`tdnzoo.models.families`) override the placement where the generic rule
gets a family wrong, and pin the official placement on ResNet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnsupportedBackboneError
from .families import PlacementRule, placement_rule
from .ops import SHORTCUT, is_mixing_op, is_no_op, is_norm, is_reparameterizable, is_spatial_leaf, is_unit
from .probe import Call, Trace, attach_second_run, fingerprint_of, trace_forward
from .tokens import MapLayout, detect_layout

__all__ = ["BackboneLayout", "Block", "Position", "analyze_backbone", "dry_run_size", "family_of"]

DRY_RUN_BATCH = 2
_RESIDUAL_FLAGS = ("has_skip", "has_residual", "use_res_connect", "use_residual", "use_shortcut", "add_identity", "residual")


@dataclass
class Position:
    """Where one temporal module goes: before (or after) ``module``, on a map of ``layout``."""

    module: nn.Module
    path: str
    layout: MapLayout
    after: bool = False

    def describe(self) -> str:
        return f"{'after' if self.after else 'before'} {self.path} ({self.layout.describe()})"


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
        for owner in (getattr(model, "patch_embed", None), model):
            size = getattr(owner, "img_size", None)
            if isinstance(size, int) or (isinstance(size, (tuple, list)) and size):
                return int(size if isinstance(size, int) else size[-1]), True
        return int(cfg.get("input_size", (3, 224, 224))[-1]), True
    reductions = [int(f["reduction"]) for f in getattr(model, "feature_info", None) or []]
    size = max(64, 2 * max(reductions, default=32))
    embed = next((m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "patch_embed"), None)
    proj = getattr(embed, "proj", None)
    if isinstance(proj, nn.Conv2d) and proj.kernel_size == proj.stride and size % proj.stride[0]:
        size = proj.stride[0] * -(-size // proj.stride[0])  # a multiple of a patch size such as 14
    return size, False


# -- blocks -----------------------------------------------------------------------------------


def _relative(call: Call, ancestor: Call) -> list[str]:
    return call.path[len(ancestor.path) + 1 :].split(".") if ancestor.path else call.path.split(".")


def _in_shortcut(call: Call, block: Call) -> bool:
    return any(SHORTCUT.match(part) for part in _relative(call, block))


def _outermost(calls: list[Call], below: Call) -> list[Call]:
    """Those of ``calls`` not nested in another of them (looking up to ``below``)."""
    chosen = set(map(id, calls))
    result = []
    for c in calls:
        parent = c.parent
        while parent is not None and parent is not below and id(parent) not in chosen:
            parent = parent.parent
        if parent is None or parent is below:
            result.append(c)
    return result


def _is_chain(call: Call) -> bool:
    """Its children run one after the other on each other's outputs and the last one's output is its output."""
    if not call.children:
        return False
    tensor, fingerprint = call.input, call.input_print
    for child in call.children:
        if not child.consumes(tensor, fingerprint):
            return False
        tensor, fingerprint = child.output, child.output_print
    return call.output is tensor and call.output_print == fingerprint


def _sub_units(call: Call) -> list[Call]:
    """The outermost units inside ``call`` (not looking inside ops that mix positions, such as a
    reparameterizable token mixer built of blocks)."""
    found = []
    for child in call.children:
        if is_unit(child.module):
            found.append(child)
        elif not is_mixing_op(child.module):
            found.extend(_sub_units(child))
    return found


def _mixes_outside(call: Call, subs: list[Call]) -> bool:
    """``call`` mixes positions outside ``subs`` (strided downsampling convs aside): it is a block
    of its own around them (SwiftFormer's attention around a local conv block), not a stage."""
    for c in call.descendants():
        if any(c.within(s) for s in subs) or not is_mixing_op(c.module):
            continue
        if max(getattr(c.module, "stride", (1,)) if isinstance(getattr(c.module, "stride", 1), tuple)
               else (getattr(c.module, "stride", 1) or 1,)) == 1:
            return True
    return False


def _find_blocks(call: Call, ctx: _Context) -> list[Call]:
    """The smallest repeated units at or below ``call``.

    A unit that runs its sub-units one after the other (a stage) holds blocks; so does one that
    merges several residual sub-units of one kind (HRNet's branches, a MaxViT block; not a NASNet
    cell of separable-conv branches nor a GhostNet block of ghost modules), or one whose only
    position-mixing ops are inside sub-units that timm marks residual (a CSP stage around its
    bottlenecks).
    """
    if is_unit(call.module):
        subs = _sub_units(call)
        declared = [s for s in subs if _declares_residual(s.module)]
        kinds = [type(s.module) for s in subs]
        repeated = any(kinds.count(type(s.module)) > 1 for s in subs if s in declared or _carries_input(s))
        if _is_chain(call) or repeated or (declared and not _mixes_outside(call, subs)):
            inner = [b for s in subs for b in _find_blocks(s, ctx)]
            # Sub-blocks that never see a per-frame map (MobileViT's transformer on unfolded
            # patches) leave the place to the unit around them.
            if any(shift_position(b, ctx) is not None for b in inner):
                return inner
        return [call]
    return [b for child in call.children for b in _find_blocks(child, ctx)]


def _carries_input(call: Call) -> bool:
    """Replayed with its convolution and linear weights zeroed, the module still returns a map
    correlated with its input: an identity path runs through it, as through a residual block
    (a ghost module or an attention, zeroed, returns a constant)."""
    x = call.input
    if x is None or call.output is None or call.output.shape != x.shape:
        return False
    params = {n: torch.zeros_like(p) if p.dim() >= 2 else p for n, p in call.module.named_parameters()}
    try:
        with torch.no_grad():
            out = torch.func.functional_call(call.module, params, call.args, call.kwargs)
    except Exception:  # noqa: BLE001 - cannot be replayed alone: no evidence of a skip
        return False
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return False
    a, b = (out - out.mean()).flatten().double(), (x - x.mean()).flatten().double()
    return float(a @ b) > 0.5 * float(a.norm() * b.norm())


def _declares_residual(module: nn.Module) -> bool:
    """timm says so: a residual flag, a shortcut module or a stochastic-depth ``drop_path``."""
    for flag in _RESIDUAL_FLAGS:
        if isinstance(getattr(module, flag, None), bool):
            return getattr(module, flag)
    return any((SHORTCUT.match(name) or name.startswith("drop_path")) and child is not None
               for name, child in module.named_children())


def _has_residual(call: Call) -> bool:
    """Whether a block adds its input back: timm's flags, a shortcut module, else a block that keeps its
    input's shape and is not a plain sequence of its children (its output comes from an add or a merge)."""
    m = call.module
    if call.is_leaf:
        return False
    for flag in _RESIDUAL_FLAGS:
        if isinstance(getattr(m, flag, None), bool):
            return getattr(m, flag)
    if any(SHORTCUT.match(name) and child is not None for name, child in m.named_children()):
        return True
    if call.input is None or call.output is None or call.input.shape != call.output.shape:
        return False
    return not _is_chain(call)


# -- positions inside a block -----------------------------------------------------------------


class _Context:
    """The dry run and what positions are checked against."""

    def __init__(self, trace: Trace, size: int, prefix_tokens: int | None) -> None:
        self.trace = trace
        self.size = size
        self.prefix_tokens = prefix_tokens

    def layout(self, call: Call, output: bool = False) -> MapLayout | None:
        """The layout of what ``call`` received (or returned), if it is a stack of per-frame maps."""
        tensor, alt = (call.output, call.output_alt) if output else (call.input, call.input_alt)
        return detect_layout(tensor, DRY_RUN_BATCH, self.size, self.prefix_tokens, alt, self.trace.alt_size)

    def position(self, call: Call, after: bool = False) -> Position | None:
        """``call``'s op as a position, if the module runs once and sees a per-frame map there."""
        if not self.trace.called_once(call.module):
            return None
        if after and not call.plain_output:
            return None
        layout = self.layout(call, output=after)
        if layout is None:
            return None
        return Position(call.module, call.path, layout, after)


def _lift(call: Call, block: Call) -> Call:
    """The outermost reparameterizable module holding ``call`` (up to the block), else ``call``.

    Reparameterization rebuilds such a module's inside, which would drop a wrapper placed there.
    """
    chosen = call
    parent = call.parent
    while parent is not None and parent is not block:
        if is_reparameterizable(parent.module):
            chosen = parent
        parent = parent.parent
    return block if is_reparameterizable(block.module) else chosen


def _branch(block: Call) -> list[Call]:
    """The ops of a block's residual branch, in call order: not its shortcut, not no-ops (identity, dropout)."""
    return [c for c in block.descendants() if not _in_shortcut(c, block) and not is_no_op(c.module)]


def _input_consumers(block: Call, branch: list[Call]) -> list[Call]:
    consumers = [c for c in branch if c.consumes(block.input, block.input_print)]
    return _outermost(consumers, block)


def _multi_branch(block: Call, branch: list[Call]) -> bool:
    return len({id(c.module) for c in _input_consumers(block, branch)}) >= 2


def shift_position(block: Call, ctx: _Context) -> Position | None:
    """Before the first op of the residual branch, normalisations excepted."""
    branch = _branch(block)
    if block.is_leaf or is_reparameterizable(block.module) or _multi_branch(block, branch):
        return ctx.position(block)
    consumers = _input_consumers(block, branch)
    if consumers:
        op = consumers[0]
    elif ctx.layout(block) is not None:
        # The block reshapes its input before any module sees it (windows of a post-norm Swin
        # block): the module goes in front of the whole block, TSM's in-place variant.
        return ctx.position(block)
    else:  # the block takes a list (DenseNet's layers): its first op on a map
        op = next((c for c in _outermost(branch, block) if ctx.layout(c) is not None), None)
        if op is None:
            return None
    # Past normalisations (shifting normalised tokens keeps each token's statistics its own frame's)
    # and past ops that cannot hold a module (one module shared by several blocks, as CoaT's
    # positional convs): on to the op that consumes what they return.
    for _ in range(8):
        lifted = _lift(op, block)
        position = None if is_norm(op.module) else ctx.position(lifted)
        if position is not None:
            return position
        following = _outermost([c for c in branch if c.index > op.index and c.consumes(op.output, op.output_print)], block)
        if len(following) != 1:
            return ctx.position(lifted, after=lifted is op) if is_norm(op.module) else None
        op = following[0]
    return None


def _is_stream(tensor: torch.Tensor | None, fingerprint, block: Call, branch: list[Call]) -> bool:
    """A map the branch carries whole: the block's input or an op's output (not a split or windows of one)."""
    if tensor is None:
        return False
    if tensor is block.input and fingerprint == block.input_print:
        return True
    return any(c.output is tensor and c.output_print == fingerprint for c in branch)


def difference_position(block: Call, ctx: _Context) -> Position | None:
    """Before the first op that mixes positions, on the full map it works on."""
    branch = _branch(block)
    if block.is_leaf or is_reparameterizable(block.module) or _multi_branch(block, branch):
        return ctx.position(block)
    mixing = next((c for c in branch if is_mixing_op(c.module)), None)
    if mixing is None:
        return shift_position(block, ctx)
    # The op itself or the innermost module holding it that receives a whole map ...
    call: Call | None = mixing
    while call is not None and call is not block:
        if _is_stream(call.input, call.input_print, block, branch) and ctx.layout(call) is not None:
            # ... wrapped at the outermost module receiving that same tensor (a conv-norm-act, not its conv)
            while (call.parent is not None and call.parent is not block
                   and call.parent.consumes(call.input, call.input_print)):
                call = call.parent
            lifted = _lift(call, block)
            position = ctx.position(lifted)
            if position is not None:
                return position
            break
        call = call.parent
    # ... else after the op that produced the map it splits or windows.
    earlier = [c for c in branch if c.index < mixing.index and not mixing.within(c) and c.plain_output
               and _is_stream(c.output, c.output_print, block, branch) and ctx.layout(c, output=True) is not None]
    for producer in reversed(_outermost(earlier, block)):
        lifted = _lift(producer, block)
        position = ctx.position(lifted, after=lifted is producer)
        if position is not None:
            return position
    return shift_position(block, ctx)  # no whole map before it: where the shift would go


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


def _fusion_point(call: Call, ctx: _Context) -> Position | None:
    """The deepest module returning ``call``'s output with its final value (parameter-free in most stems)."""
    producers = [p for p in ctx.trace.producers(call.output, call.output_print, call) if ctx.trace.called_once(p.module)]
    for producer in reversed(producers):
        if producer is not call and (_lift(producer, call) is not producer or not producer.plain_output):
            continue  # inside a reparameterizable module, or returning more: wrap the outer module instead
        layout = ctx.layout(producer, output=True)
        if layout is not None:
            return Position(producer.module, producer.path, layout, after=True)
    return None


def _analyze_stem(trace: Trace, ctx: _Context, features: list[_Feature], layout: BackboneLayout) -> None:
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


def _dry_runs(model: nn.Module, name: str, family: str) -> tuple[Trace, int, bool, bool]:
    """Trace ``forward_features`` at the dry-run size (else twice that, else the model's own size), and
    once more at another size when the model takes any (to tell grid dimensions from channels).

    Returns the trace, its frame size, whether the model takes that size only, and whether a
    smaller size failed (the frame size is then the smallest known to work).
    """
    size, fixed = dry_run_size(model)
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


def _rule_positions(call: Call, rule: PlacementRule, ctx: _Context) -> tuple[Position | None, Position | None]:
    """The positions a per-family rule names (attribute paths inside the block)."""
    def at(attr: str) -> Position | None:
        target = next((c for c in call.descendants() if c.path == f"{call.path}.{attr}"), None)
        return ctx.position(target, after=rule.after) if target is not None else None

    return at(rule.shift), at(rule.difference)


def _blocks(trace: Trace, ctx: _Context, features: list[_Feature], family: str) -> list[Block]:
    """The blocks after the stem with their paper stage (from feature_info, else from their map size)."""
    start = next((f.start for f in features if f.reduction >= 4), features[0].start if features else 0)
    found: list[Call] = []
    for root in trace.roots:
        found.extend(b for b in _find_blocks(root, ctx) if b.index >= start and b not in found)
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
        blocks.append(Block(call.path, call.module, stage, reduction, index, _has_residual(call), shift, difference))
    return blocks


def analyze_backbone(model: nn.Module, name: str | None = None) -> BackboneLayout:
    """Read a timm model's stages, blocks, temporal positions, stem and fusion points from a dry run.

    Args:
        model: a timm model with ``feature_info``, ``forward_features`` and ``forward_head``.
        name: used in error messages; defaults to the model's architecture name.

    Raises:
        UnsupportedBackboneError: naming the backbone, its timm family and the reason.
    """
    family = family_of(model)
    name = name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    if not getattr(model, "feature_info", None) or not all(hasattr(model, m) for m in ("forward_features", "forward_head")):
        raise unsupported(name, family, "it has no timm feature_info / forward_features / forward_head")
    trace, size, fixed, smaller_failed = _dry_runs(model, name, family)
    prefix = getattr(model, "num_prefix_tokens", None)
    ctx = _Context(trace, size, int(prefix) if isinstance(prefix, int) else None)
    # Feature modules whose names do not resolve (a typo in a timm family's feature_info) leave the
    # stages to the blocks' map sizes.
    features = _features(model, trace)
    reductions = [f.reduction for f in features] or [32]
    min_size = size if fixed or smaller_failed else max(reductions)
    layout = BackboneLayout(name=name, family=family, size=size, min_size=min_size, fixed=fixed)
    layout.blocks = _blocks(trace, ctx, features, family)
    _analyze_stem(trace, ctx, features, layout)
    return layout
