"""Benchmarks: the speed report (``tdnzoo bench``) and its building blocks, FLOPs counting
(``tdnzoo flops``) and the accuracy benchmark (``tdnzoo bench accuracy``, :mod:`.accuracy`)."""
from .allocator import fix_malloc_thresholds
from .flops import FlopCount, count_flops, count_params, flop_breakdown
from .speed import SpeedConfig, run_speed_benchmark, write_speed_report
from .timing import Timing, time_interleaved

__all__ = [
    "FlopCount",
    "SpeedConfig",
    "Timing",
    "count_flops",
    "count_params",
    "fix_malloc_thresholds",
    "flop_breakdown",
    "run_speed_benchmark",
    "time_interleaved",
    "write_speed_report",
]
