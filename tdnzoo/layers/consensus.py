"""Segment consensus: from per-segment outputs to one per clip."""
from __future__ import annotations

import torch
from torch import nn

from .shift import split_segments

torch.fx.wrap("split_segments")  # a leaf for torch.fx (see .shift)

__all__ = ["SegmentConsensus"]


class SegmentConsensus(nn.Module):
    """Mean over segments (official "avg consensus"): ``[B*T, ...]`` -> ``[B, ...]``."""

    def __init__(self, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_segments(x, self.num_segments).mean(dim=1)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}"
