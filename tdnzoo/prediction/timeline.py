"""The timeline PNG of sliding-window scores (matplotlib's Agg canvas: no display, no global backend change).

It reads the scores through the :class:`WindowTimeline` protocol, which
:class:`~tdnzoo.prediction.windows.WindowScores` satisfies, so that the windows module imports
this one and not the reverse.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

__all__ = ["WindowTimeline", "plot_timeline"]


class WindowTimeline(Protocol):
    """What the plot reads of per-window scores."""

    video: str
    probs: torch.Tensor  # [W, C]
    bounds: list[tuple[int, int]]
    fps: float | None
    num_frames: int
    window: int
    stride: int
    class_names: list[str]

    def __len__(self) -> int: ...

    def timeline_classes(self, n: int = 5) -> Sequence[int]: ...


def plot_timeline(scores: WindowTimeline, path: str | os.PathLike, *, num_classes: int = 5, title: str | None = None) -> Path:
    """Probabilities of the ``num_classes`` top classes at each window's centre, and a strip of each
    window's best class underneath. The x axis is in seconds when the frame rate is known, else in frames.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    classes = scores.timeline_classes(num_classes)
    centres = [(s + e) / 2 for s, e in scores.bounds]
    x = [c / scores.fps for c in centres] if scores.fps else centres
    n = len(scores)
    fig = Figure(figsize=(min(max(8.0, 0.08 * n + 6), 24.0), 4.5))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(12, 1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    strip = fig.add_subplot(grid[1], sharex=ax)
    colours = {}
    for c in classes:
        (line,) = ax.plot(x, scores.probs[:, c].tolist(), marker="o" if n <= 60 else None, markersize=3,
                          linewidth=1.5, label=scores.class_names[c])
        colours[c] = line.get_color()
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"{Path(scores.video).name}: {n} windows of {scores.window} frames, stride {scores.stride}")
    ax.tick_params(labelbottom=False)
    # Best class of each window as a coloured band (grey when it is not among the plotted classes).
    best = scores.probs.argmax(dim=1).tolist()
    half = (scores.stride / 2) / scores.fps if scores.fps else scores.stride / 2
    for xi, b in zip(x, best):
        strip.axvspan(xi - half, xi + half, color=colours.get(b, "0.7"), linewidth=0)
    strip.set_yticks([])
    strip.set_ylabel("top-1", rotation=0, ha="right", va="center", fontsize=8)
    strip.set_xlabel("time (s)" if scores.fps else "frame")
    ax.set_xlim(0, scores.num_frames / scores.fps if scores.fps else scores.num_frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # font-cache chatter on first use
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
