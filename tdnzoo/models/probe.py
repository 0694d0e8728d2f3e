"""A dry run of a backbone's own forward that records which module ran, in what order, on which tensor.

tdnzoo does not rebuild a backbone's forward. It runs ``forward_features`` once on a small input with
hooks on every module and keeps, for each call, the tensor it received and the tensor it returned
(the objects themselves, so that "module B consumed what module A returned" is an identity test),
a fingerprint of their values (an in-place op after a call changes the value but not the object),
and the calls nested inside it. Where temporal modules go, which ops form the stem and where the
S-TDM fusions happen are all read from this record (see :mod:`tdnzoo.models.backbone`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["Call", "Trace", "attach_second_run", "fingerprint_of", "is_chain", "outermost", "trace_forward"]


# What an attention computes, however its module is named (iFormer's SHMABlock, ...).
_ATTENTION_FUNCTIONS = {torch.softmax, F.softmax, torch.Tensor.softmax, F.scaled_dot_product_attention}
_SOFTMAX_MODULES = (nn.Softmax, nn.Softmax2d, nn.LogSoftmax)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def fingerprint_of(t: torch.Tensor | None) -> tuple[float, float] | None:
    if t is None or not t.is_floating_point():
        return None
    t = t.detach().double()
    return float(t.sum()), float(t.abs().sum())


@dataclass(eq=False)
class Call:
    """One call of one module during the dry run.

    ``input`` is the first positional argument when it is a tensor (``None`` for a list, as a
    DenseNet layer takes), ``output`` the returned tensor (or the first of a returned tuple).
    ``plain_input``: the module got that one tensor and nothing else (or ``None`` for the rest);
    ``plain_output``: it returned a tensor, not a tuple. ``input_alt`` / ``output_alt``: the shapes
    the same call saw in a second dry run on frames of another size (see :func:`attach_second_run`).
    ``args`` / ``kwargs``: what it was called with, to replay it.
    """

    path: str
    module: nn.Module
    parent: Call | None
    index: int
    input: torch.Tensor | None
    input_print: tuple[float, float] | None
    plain_input: bool
    output: torch.Tensor | None = None
    output_print: tuple[float, float] | None = None
    plain_output: bool = False
    exit_index: int = -1
    children: list[Call] = field(default_factory=list)
    input_alt: tuple[int, ...] | None = None
    output_alt: tuple[int, ...] | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @property
    def is_leaf(self) -> bool:
        return next(self.module.children(), None) is None

    def descendants(self) -> Iterator[Call]:
        """Calls nested inside this one, in the order they started."""
        for child in self.children:
            yield child
            yield from child.descendants()

    def within(self, other: Call) -> bool:
        """True when this call runs inside ``other`` (or is it)."""
        call: Call | None = self
        while call is not None:
            if call is other:
                return True
            call = call.parent
        return False

    def consumes(self, tensor: torch.Tensor | None, fingerprint: tuple[float, float] | None) -> bool:
        """It received ``tensor`` itself, with the value it had then (not changed in place since)."""
        return tensor is not None and self.input is tensor and self.input_print == fingerprint

    def __repr__(self) -> str:
        shape = tuple(self.input.shape) if self.input is not None else None
        return f"Call({self.path!r}, {type(self.module).__name__}, in={shape})"


@dataclass
class Trace:
    """All module calls of one dry run, in the order they started.

    ``attention``: ids of the modules whose own forward computed a softmax or a scaled dot-product
    attention (an attention, whatever its class is called).
    """

    image: torch.Tensor
    calls: list[Call]
    roots: list[Call]
    output: torch.Tensor | None
    alt_size: int | None = None
    attention: frozenset[int] = frozenset()

    def calls_of(self, module: nn.Module) -> list[Call]:
        return [c for c in self.calls if c.module is module]

    def called_once(self, module: nn.Module) -> bool:
        return len(self.calls_of(module)) == 1

    def producers(self, tensor: torch.Tensor, fingerprint: tuple[float, float] | None, inside: Call) -> list[Call]:
        """Calls within ``inside`` that returned ``tensor`` with its final value, outermost first."""
        return [c for c in [inside, *inside.descendants()] if c.output is tensor and c.output_print == fingerprint]


def trace_forward(model: nn.Module, run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Trace:
    """Run ``run(x)`` (e.g. ``model.forward_features``) in eval mode without gradients, recording every call.

    The model's training flag is restored afterwards; nothing else is changed.
    """
    paths: dict[int, str] = {}
    for name, module in model.named_modules():
        paths.setdefault(id(module), name)
    calls: list[Call] = []
    roots: list[Call] = []
    stack: list[Call] = []
    exits = [0]

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tensor = _first_tensor(args[0]) if args else None
        if args and not isinstance(args[0], torch.Tensor):
            tensor = None  # a list of tensors (DenseNet) is not one map
        parent = stack[-1] if stack else None
        call = Call(paths[id(module)], module, parent, len(calls), tensor, fingerprint_of(tensor),
                    plain_input=tensor is not None and all(a is None for a in (*args[1:], *kwargs.values())),
                    args=args, kwargs=dict(kwargs))
        calls.append(call)
        (parent.children if parent is not None else roots).append(call)
        stack.append(call)

    def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        call = stack.pop()
        call.output = _first_tensor(output)
        call.output_print = fingerprint_of(call.output)
        call.plain_output = isinstance(output, torch.Tensor)
        call.exit_index = exits[0]
        exits[0] += 1

    handles = []
    for module in model.modules():
        if module is model:
            continue
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True))
    attention: set[int] = set()

    class AttentionSpy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in _ATTENTION_FUNCTIONS:
                # the attention is the module calling softmax, not an nn.Softmax it holds for it
                owner = next((c for c in reversed(stack) if not isinstance(c.module, _SOFTMAX_MODULES)), None)
                if owner is not None:
                    attention.add(id(owner.module))
            return func(*args, **(kwargs or {}))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), AttentionSpy():
            output = run(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Trace(image=x, calls=calls, roots=roots, output=_first_tensor(output), attention=frozenset(attention))


def attach_second_run(trace: Trace, other: Trace) -> bool:
    """Give each call of ``trace`` the shapes its counterpart saw in ``other``, a run on frames of another size.

    A dimension that changes with the frame size is spatial; one that does not is channels (or
    batch, heads, windows). Calls are matched by order, which holds when the forward takes the same
    path at both sizes; returns ``False`` (and attaches nothing) when it did not.
    """
    if len(trace.calls) != len(other.calls) or any(a.module is not b.module for a, b in zip(trace.calls, other.calls)):
        return False
    for a, b in zip(trace.calls, other.calls):
        a.input_alt = tuple(b.input.shape) if b.input is not None else None
        a.output_alt = tuple(b.output.shape) if b.output is not None else None
    trace.alt_size = int(other.image.shape[-1])
    return True


def outermost(calls: list[Call], below: Call) -> list[Call]:
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


def is_chain(call: Call) -> bool:
    """Its children run one after the other on each other's outputs and the last one's output is its output."""
    if not call.children:
        return False
    tensor, fingerprint = call.input, call.input_print
    for child in call.children:
        if not child.consumes(tensor, fingerprint):
            return False
        tensor, fingerprint = child.output, child.output_print
    return call.output is tensor and call.output_print == fingerprint
