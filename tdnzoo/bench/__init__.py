"""Benchmarks: the speed report (``tdnzoo bench``) and its building blocks."""
from .allocator import fix_malloc_thresholds
from .speed import SpeedConfig, run_speed_benchmark, write_speed_report
from .timing import Timing, time_interleaved

__all__ = ["SpeedConfig", "Timing", "fix_malloc_thresholds", "run_speed_benchmark", "time_interleaved", "write_speed_report"]
