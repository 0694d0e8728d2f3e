"""Segment consensus: from per-segment outputs to one per clip."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SegmentConsensus"]


class SegmentConsensus(nn.Module):
    """Mean over segments (official "avg consensus"): ``[B*T, ...]`` -> ``[B, ...]``."""

    def __init__(self, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.num_segments:
            raise ValueError(
                f"expected a batch of B*{self.num_segments} segment outputs, got {x.shape[0]}"
            )
        return x.view(-1, self.num_segments, *x.shape[1:]).mean(dim=1)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}"
