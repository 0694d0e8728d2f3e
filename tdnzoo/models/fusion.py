"""Where TDN's short-term difference stream joins the backbone: a wrapper on the op producing that map.

TDN fuses the S-TDM maps into the RGB stream twice: after the stem, ``x = alpha*x + beta*up(d1)``,
and after the first stage, ``x = alpha*stage(x) + beta*up(d2)``. The backbone runs its own
``forward_features``, so tdnzoo wraps the op that produces each of those maps (the deepest module
returning it, which is parameter-free in most stems and stages: ResNet's max-pool and the last
ReLU of ``layer1``) in a :class:`DifferenceFusion`.

How the maps get there: :meth:`tdnzoo.models.VideoClassifier.forward_features` computes the S-TDM
maps, sets each wrapper's ``difference`` right before calling the backbone and clears it in a
``finally``. Nothing is kept across calls, and the hand-over is plain attribute access that
``torch.compile(fullgraph=True)`` and ``torch.fx`` trace through. A wrapper called without its map
(the backbone run on its own) raises instead of silently skipping the fusion.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers import fuse_difference
from .tokens import MapLayout

__all__ = ["DifferenceFusion"]

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
        self.difference: torch.Tensor | None = None  # set by VideoClassifier.forward_features, one call only

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        if self.difference is None:
            raise RuntimeError(
                "DifferenceFusion called without its S-TDM map: run the backbone through "
                "VideoClassifier.forward_features, which sets it"
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
