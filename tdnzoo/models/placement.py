"""Where a temporal module goes inside one block, read from the dry run's record of its calls.

The *shift* precedes the first op of the block's residual branch, normalisations excepted (the op
that consumes the block's input: ResNet's ``conv1``; after a pre-norm, a transformer's token mixer).
The *L-TDM + temporal conv* precede the first op that mixes positions (ResNet's ``conv2``, a
depthwise conv, attention), on the full map it receives; where that op sees a split or windows of
the map, the module goes on the map before the split (after the op that produced it). A block whose
input feeds several branches (Inception, RepVGG), and ops inside a reparameterizable module, get
the module in front of the whole block / module, which reparameterization keeps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .ops import SHORTCUT, is_mixing_op, is_no_op, is_norm, is_reparameterizable
from .probe import Call, Trace, outermost
from .tokens import MapLayout, detect_layout

__all__ = ["DRY_RUN_BATCH", "PlacementContext", "Position", "difference_position", "in_shortcut", "lift", "shift_position"]

DRY_RUN_BATCH = 2


@dataclass
class Position:
    """Where one temporal module goes: before (or after) ``module``, on a map of ``layout``."""

    module: nn.Module
    path: str
    layout: MapLayout
    after: bool = False

    def describe(self) -> str:
        return f"{'after' if self.after else 'before'} {self.path} ({self.layout.describe()})"


class PlacementContext:
    """The dry run, and what positions are checked against: the frame size and prefix tokens."""

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


def _relative(call: Call, ancestor: Call) -> list[str]:
    return call.path[len(ancestor.path) + 1 :].split(".") if ancestor.path else call.path.split(".")


def in_shortcut(call: Call, block: Call) -> bool:
    """``call`` runs in ``block``'s shortcut (a child named ``shortcut``, ``downsample``, ... on its path)."""
    return any(SHORTCUT.match(part) for part in _relative(call, block))


def lift(call: Call, block: Call) -> Call:
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
    return [c for c in block.descendants() if not in_shortcut(c, block) and not is_no_op(c.module)]


def _input_consumers(block: Call, branch: list[Call]) -> list[Call]:
    consumers = [c for c in branch if c.consumes(block.input, block.input_print)]
    return outermost(consumers, block)


def _multi_branch(block: Call, branch: list[Call]) -> bool:
    return len({id(c.module) for c in _input_consumers(block, branch)}) >= 2


def shift_position(block: Call, ctx: PlacementContext) -> Position | None:
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
        op = next((c for c in outermost(branch, block) if ctx.layout(c) is not None), None)
        if op is None:
            return None
    # Past normalisations (shifting normalised tokens keeps each token's statistics its own frame's)
    # and past ops that cannot hold a module (one module shared by several blocks, as CoaT's
    # positional convs): on to the op that consumes what they return.
    for _ in range(8):
        lifted = lift(op, block)
        position = None if is_norm(op.module) else ctx.position(lifted)
        if position is not None:
            return position
        following = outermost([c for c in branch if c.index > op.index and c.consumes(op.output, op.output_print)], block)
        if len(following) != 1:
            return ctx.position(lifted, after=lifted is op) if is_norm(op.module) else None
        op = following[0]
    return None


def _is_stream(tensor: torch.Tensor | None, fingerprint: tuple[float, float] | None, block: Call, branch: list[Call]) -> bool:
    """A map the branch carries whole: the block's input or an op's output (not a split or windows of one)."""
    if tensor is None:
        return False
    if tensor is block.input and fingerprint == block.input_print:
        return True
    return any(c.output is tensor and c.output_print == fingerprint for c in branch)


def difference_position(block: Call, ctx: PlacementContext) -> Position | None:
    """Before the first op that mixes positions, on the full map it works on."""
    branch = _branch(block)
    if block.is_leaf or is_reparameterizable(block.module) or _multi_branch(block, branch):
        return ctx.position(block)
    mixing = next((c for c in branch if is_mixing_op(c.module, ctx.trace.attention)), None)
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
            lifted = lift(call, block)
            position = ctx.position(lifted)
            if position is not None:
                return position
            break
        call = call.parent
    # ... else after the op that produced the map it splits or windows.
    earlier = [c for c in branch if c.index < mixing.index and not mixing.within(c) and c.plain_output
               and _is_stream(c.output, c.output_print, block, branch) and ctx.layout(c, output=True) is not None]
    for producer in reversed(outermost(earlier, block)):
        lifted = lift(producer, block)
        position = ctx.position(lifted, after=lifted is producer)
        if position is not None:
            return position
    return shift_position(block, ctx)  # no whole map before it: where the shift would go
