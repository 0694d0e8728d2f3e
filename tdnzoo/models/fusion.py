"""Where TDN's short-term difference stream joins the backbone: a wrapper on the op producing that map.

TDN fuses the S-TDM maps into the RGB stream twice: after the stem, ``x = alpha*x + beta*up(d1)``,
and after the first stage, ``x = alpha*stage(x) + beta*up(d2)``. The backbone runs its own
``forward_features``, so tdnzoo wraps the op that produces each of those maps (the deepest module
returning it, which is parameter-free in most stems and stages: ResNet's max-pool and the last
ReLU of ``layer1``) in a :class:`DifferenceFusion`.

How the maps get there is :class:`FusionHandOver`, the one place that does it: the model's forward
computes the S-TDM maps and calls :meth:`FusionHandOver.run`, which sets each wrapper's
``difference`` right before the backbone runs and clears it in a ``finally``. Nothing is kept across
calls, and the hand-over is plain attribute access that ``torch.compile(fullgraph=True)``,
``torch.export`` and ``torch.fx`` trace through. A wrapper called without its map (the backbone run
on its own) raises instead of silently skipping the fusion.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from timm.layers import register_notrace_module
from torch import nn

from ..layers import fuse_difference
from .tokens import MapLayout

__all__ = ["DifferenceFusion", "FusionHandOver"]

# torch.fx records the fusion as one call (its size logic is not traceable), as timm does its helpers.
torch.fx.wrap("fuse_difference")


class DifferenceFusion(nn.Module):
    """Returns ``alpha * inner(...) + beta * up(difference)``, ``up`` nearest to ``inner``'s map size.

    Args:
        inner: the backbone op whose output the difference map joins.
        alpha, beta: fusion weights (official TDN: 0.5, 0.5 at 8 segments, else 0.75, 0.25).
        layout: how ``inner``'s output holds its maps; the difference map always comes as
            ``[N, C, h, w]`` (see :func:`tdnzoo.models.difference.short_term_stream`).
    """

    def __init__(self, inner: nn.Module, alpha: float, beta: float, layout: MapLayout | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.layout = None if layout is None or layout.kind == "nchw" else layout
        self.difference: torch.Tensor | None = None  # set by FusionHandOver.run, for one backbone call only

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        if self.difference is None:
            raise RuntimeError(
                "DifferenceFusion called without its S-TDM map: run the backbone through the video model's "
                "forward_features or forward_intermediates, whose FusionHandOver sets it"
            )
        if isinstance(out, tuple):  # e.g. a patch embedding returning (tokens, grid size)
            return (self._fuse(out[0]), *out[1:])
        return self._fuse(out)

    def _fuse(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return fuse_difference(x, self.difference, self.alpha, self.beta)
        maps, prefix = self.layout.to_maps(x)
        fused = fuse_difference(maps.contiguous(), self.difference, self.alpha, self.beta)
        return self.layout.from_maps(fused, prefix)

    def extra_repr(self) -> str:
        layout = f", layout={self.layout.describe()}" if self.layout is not None else ""
        return f"alpha={self.alpha}, beta={self.beta}{layout}"


@register_notrace_module  # timm's tracer records it as a call: its effect is needed when the graph runs
class FusionHandOver(nn.Module):
    """Hands S-TDM's maps to the backbone's :class:`DifferenceFusion` wrappers for one backbone call.

    :meth:`run` is the only code that sets or clears a wrapper's ``difference``:

    - eager, compiled and exported: the maps are set before the backbone call and cleared after it,
      whatever happens;
    - ``torch.fx``: tracing runs the same code on proxies, which puts the fusions traced through
      into the graph. timm's tracer keeps some backbone modules whole (``BatchNormAct2d`` and other
      notrace modules): a wrapper inside one runs only when the graph runs, and reads its map then.
      So the traced forward also records two calls of this module: ``centre = fusion_handover(centre,
      *maps)`` sets the maps before the backbone and ``out = fusion_handover(out)`` clears them after
      it (each returns its first argument, so that the graph keeps it in place);
    - gradient checkpointing: the backward pass re-runs checkpointed fusions after the call ended, so
      the maps are set again when the gradient reaches the call's outputs and cleared when it reaches
      the first map.
    """

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "points", [])  # the wrappers, not registered as children (set when tracing)

    def forward(self, x: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
        for i, point in enumerate(self.points):
            point.difference = maps[i] if i < len(maps) else None
        return x

    @staticmethod
    @contextlib.contextmanager
    def maps_set(points: Sequence[DifferenceFusion], maps: Sequence[torch.Tensor]) -> Iterator[None]:
        """``maps`` on ``points`` for the block, cleared whatever happens."""
        for point, difference in zip(points, maps):
            point.difference = difference
        try:
            yield
        finally:
            for point in points:
                point.difference = None

    def run(self, run: Callable[[torch.Tensor], Any], frames: torch.Tensor, maps: Sequence[torch.Tensor],
            points: Sequence[DifferenceFusion], *, again_in_backward: bool = False) -> Any:
        """``run(frames)`` (a backbone method) with ``maps`` handed to ``points``.

        Args:
            again_in_backward: the backbone recomputes checkpointed stages in the backward pass.
        """
        tracing = torch.fx._symbolic_trace.is_fx_symbolic_tracing()
        if tracing:  # the hand-over must also happen when the traced graph runs
            self.points[:] = points
            frames = self(frames, *maps)
        with self.maps_set(points, maps):
            out = run(frames)
        if tracing:  # clear after the last backbone node: through the output, so that it stays in the graph
            if isinstance(out, tuple):  # forward_intermediates: (final map, maps)
                return (self(out[0]), *out[1:])
            if isinstance(out, list):  # forward_intermediates(intermediates_only=True)
                return [*out[:-1], self(out[-1])]
            return self(out)
        if again_in_backward:
            _hand_over_again_in_backward(out, maps, points)
        return out


def _hand_over_again_in_backward(out: Any, maps: Sequence[torch.Tensor], points: Sequence[DifferenceFusion]) -> None:
    """Set the maps again when the gradient reaches this call's outputs (before any of its checkpointed stages
    is recomputed: autograd finishes one clip's backbone before the next one's), clear them when it reaches the
    first map (after all of them)."""
    maps = list(maps)  # held by the outputs' hooks: the graph itself need not keep them
    refs = [weakref.ref(m) for m in maps]  # the first map's hook must not hold it (a cycle)

    def put(grad: torch.Tensor) -> None:
        for point, difference in zip(points, maps):
            point.difference = difference

    def clear(grad: torch.Tensor) -> None:
        for point, ref in zip(points, refs):
            if point.difference is ref():
                point.difference = None

    for t in _tensors(out):
        if t.requires_grad:
            t.register_hook(put)
    if maps and maps[0].requires_grad:
        maps[0].register_hook(clear)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, torch.Tensor):
        yield value
