"""Composable temporal layers: each works on per-frame maps ``[B*T, C, H, W]``."""
from .consensus import SegmentConsensus
from .shift import TemporalConv, TemporalShift, shift_kernel
from .tdm import LongTermTDM, ShortTermTDM, frame_differences, fuse_difference

__all__ = [
    "LongTermTDM",
    "SegmentConsensus",
    "ShortTermTDM",
    "TemporalConv",
    "TemporalShift",
    "frame_differences",
    "fuse_difference",
    "shift_kernel",
]
