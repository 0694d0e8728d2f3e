"""Which modules of a backbone are its blocks, and which of them add their input back.

Blocks are the smallest repeated units of the stages: modules with two or more convolutions or
linear layers, one of which mixes positions (a spatial conv, attention, pooling), found top-down
through stage containers (a sequence of blocks, a DenseNet block of layers, an HRNet module of
branches, a DLA tree, a CSP stage).
"""
from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from .ops import SHORTCUT, is_mixing_op, is_unit
from .placement import PlacementContext, shift_position
from .probe import Call, is_chain

__all__ = ["carries_input", "declares_residual", "find_blocks", "has_residual"]

RESIDUAL_FLAGS = ("has_skip", "has_residual", "use_res_connect", "use_residual", "use_shortcut", "add_identity", "residual")


def _sub_units(call: Call, attention: Collection[int]) -> list[Call]:
    """The outermost units inside ``call`` (not looking inside ops that mix positions, such as a
    reparameterizable token mixer built of blocks)."""
    found = []
    for child in call.children:
        if is_unit(child.module, attention):
            found.append(child)
        elif not is_mixing_op(child.module, attention):
            found.extend(_sub_units(child, attention))
    return found


def _mixes_outside(call: Call, subs: list[Call], attention: Collection[int]) -> bool:
    """``call`` mixes positions outside ``subs`` (strided downsampling convs aside): it is a block
    of its own around them (SwiftFormer's attention around a local conv block), not a stage."""
    for c in call.descendants():
        if any(c.within(s) for s in subs) or not is_mixing_op(c.module, attention):
            continue
        if max(getattr(c.module, "stride", (1,)) if isinstance(getattr(c.module, "stride", 1), tuple)
               else (getattr(c.module, "stride", 1) or 1,)) == 1:
            return True
    return False


def find_blocks(call: Call, ctx: PlacementContext) -> list[Call]:
    """The smallest repeated units at or below ``call``.

    A unit that runs its sub-units one after the other (a stage) holds blocks; so does one that
    merges several residual sub-units of one kind (HRNet's branches, a MaxViT block; not a NASNet
    cell of separable-conv branches nor a GhostNet block of ghost modules), or one whose only
    position-mixing ops are inside sub-units that timm marks residual (a CSP stage around its
    bottlenecks).
    """
    attention = ctx.trace.attention
    if is_unit(call.module, attention):
        subs = _sub_units(call, attention)
        declared = [s for s in subs if declares_residual(s.module)]
        kinds = [type(s.module) for s in subs]
        repeated = any(kinds.count(type(s.module)) > 1 for s in subs if s in declared or carries_input(s))
        if is_chain(call) or repeated or (declared and not _mixes_outside(call, subs, attention)):
            inner = [b for s in subs for b in find_blocks(s, ctx)]
            # Sub-blocks that never see a per-frame map (MobileViT's transformer on unfolded
            # patches) leave the place to the unit around them.
            if any(shift_position(b, ctx) is not None for b in inner):
                return inner
        return [call]
    return [b for child in call.children for b in find_blocks(child, ctx)]


def carries_input(call: Call) -> bool:
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


def declares_residual(module: nn.Module) -> bool:
    """timm says so: a residual flag, a shortcut module or a stochastic-depth ``drop_path``."""
    for flag in RESIDUAL_FLAGS:
        if isinstance(getattr(module, flag, None), bool):
            return getattr(module, flag)
    return any((SHORTCUT.match(name) or name.startswith("drop_path")) and child is not None
               for name, child in module.named_children())


def has_residual(call: Call) -> bool:
    """Whether a block adds its input back: timm's flags, a shortcut module, else a block that keeps its
    input's shape and is not a plain sequence of its children (its output comes from an add or a merge)."""
    m = call.module
    if call.is_leaf:
        return False
    for flag in RESIDUAL_FLAGS:
        if isinstance(getattr(m, flag, None), bool):
            return getattr(m, flag)
    if any(SHORTCUT.match(name) and child is not None for name, child in m.named_children()):
        return True
    if call.input is None or call.output is None or call.input.shape != call.output.shape:
        return False
    return not is_chain(call)
