"""The paper's temporal layers, each on per-frame maps ``[B*T, C, H, W]``, and the consensus."""
from .consensus import SegmentConsensus
from .ltdm import LongTermStack, LongTermTDM
from .shift import TemporalConv, TemporalShift, shift_kernel, split_segments
from .stdm import ShortTermTDM, frame_differences, fuse_difference

__all__ = [
    "LongTermStack",
    "LongTermTDM",
    "SegmentConsensus",
    "ShortTermTDM",
    "TemporalConv",
    "TemporalShift",
    "frame_differences",
    "fuse_difference",
    "shift_kernel",
    "split_segments",
]
