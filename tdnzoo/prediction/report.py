"""Plain-text tables of predictions, for the terminal."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .videos import Prediction
    from .windows import WindowScores

__all__ = ["format_predictions", "format_segments"]


def format_predictions(predictions: Sequence[Prediction]) -> str:
    """One block per readable video: rank, probability, class index and name."""
    blocks = []
    for p in predictions:
        if not p.ok:
            continue
        width = max(len(c.label) for c in p.top_k)
        lines = [f"{p.video}  ({_length(p.num_frames, p.seconds, p.declared_frames)}, {p.views} views)",
                 f"  {'rank':>4}  {'prob':>6}  {'index':>5}  {'class':<{width}}"]
        lines += [f"  {r:>4}  {c.prob:>6.4f}  {c.index:>5}  {c.label:<{width}}" for r, c in enumerate(p.top_k, 1)]
        blocks.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(blocks)


def format_segments(scores: WindowScores) -> str:
    """Runs of windows sharing their best class: span, class, mean probability."""
    unit = "s" if scores.fps else ""
    length = _length(scores.num_frames, scores.seconds, scores.declared_frames)
    lines = [f"{scores.video}  ({length}, {len(scores)} windows of {scores.window} frames, "
             f"stride {scores.stride}, {scores.views} views)"]
    for seg in scores.segments():
        if scores.fps:
            span = f"{seg['start_time']:9.2f}{unit} - {seg['end_time']:9.2f}{unit}"
        else:
            span = f"frames {seg['start_frame']:6d} - {seg['end_frame']:6d}"
        lines.append(f"  {span}  {seg['prob']:6.4f}  {seg['label']}  ({seg['windows']} windows)")
    return "\n".join(lines)


def _length(num_frames: int | None, seconds: float | None, declared_frames: int | None) -> str:
    """``124 frames, 4.96 s`` and, for a file cut short, what it declares."""
    text = f"{num_frames} frames" + (f", {seconds:g} s" if seconds is not None else "")
    if declared_frames is not None and num_frames is not None and num_frames < declared_frames:
        text += f", cut short of the {declared_frames} it declares"
    return text
