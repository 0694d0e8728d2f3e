"""Composable temporal layers: each works on per-frame maps ``[B*T, C, H, W]``."""
from ._fast import reference_ops
from .consensus import SegmentConsensus
from .shift import TemporalConv, TemporalShift, shift_kernel
from .tdm import (
    FusingReLU,
    LongTermStack,
    LongTermTDM,
    ShortTermTDM,
    frame_differences,
    fuse_difference,
    fusion_in_activation,
)

__all__ = [
    "FusingReLU",
    "LongTermStack",
    "LongTermTDM",
    "SegmentConsensus",
    "ShortTermTDM",
    "TemporalConv",
    "TemporalShift",
    "frame_differences",
    "fuse_difference",
    "fusion_in_activation",
    "reference_ops",
    "shift_kernel",
]
