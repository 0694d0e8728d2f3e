"""Scores along long videos: windows of the video, each sampled as a whole clip.

A window of ``window`` frames starts every ``stride`` frames; the last window ends at the last
frame (so the tail is always covered), and a video shorter than one window is one window.
Inside a window, frames are sampled as the model samples a whole video in evaluation
(``num_segments`` segments of ``frames_per_segment`` frames, segment centres; ``CLIPS`` clips
spread in each segment). Spans are given in frames (``64``) or seconds (``"2s"``).

The video is decoded once, front to back, and only the frames pending windows need are kept,
already transformed, so hours of video fit in memory. A file cut short (fewer frames decode than
its container declares) gets windows up to its real end only: the windows before the cut keep
their scores, the tail window is placed at the real last frame, and the length reported is the real one.

Example:
    >>> scores = predict_windows("match.mp4", "tsm_resnet50.k400_8f", window="2s", stride="1s")
    >>> scores.probs.shape                      # [windows, classes]
    >>> scores.save("out/")                     # match.windows.csv, .json and .timeline.png
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.decode import open_video
from ..data.errors import TruncatedVideoError
from .frames import iter_frames, video_fps
from .loading import class_names_of, load_predict_model
from .scoring import ViewScorer
from .spec import ViewSpec, resolve_view_spec
from .timeline import plot_timeline
from .videos import ClassScore, _place, top_classes

__all__ = ["WindowScores", "parse_span", "predict_windows", "score_windows", "window_bounds"]

DEFAULT_WINDOW = "2s"


def parse_span(value: int | str, fps: float | None, *, name: str = "window") -> int:
    """A span in frames: ``64`` or ``"64"`` frames, ``"2s"``/``"1.5s"`` seconds (needs ``fps``).

    Raises:
        ValueError: not a positive span, or seconds without a frame rate.
    """
    text = str(value).strip().lower()
    seconds = text.endswith("s")
    number = text[:-1] if text.endswith(("s", "f")) else text
    try:
        amount = float(number) if seconds else int(number)
    except ValueError:
        raise ValueError(f"{name} must be a number of frames (64) or seconds (2s, 1.5s), got {value!r}") from None
    if seconds:
        if not fps or fps <= 0:
            raise ValueError(
                f"{name} '{value}' is in seconds but the frame rate is unknown (a frame folder?): "
                "give it in frames or pass the frame rate (--fps)"
            )
        frames = int(round(amount * fps)) if amount > 0 else 0
    else:
        frames = int(amount)
    if frames < 1:
        raise ValueError(f"{name} must span at least one frame, got {value!r}")
    return frames


def window_bounds(num_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` frame ranges (end exclusive): every ``stride`` frames, plus one ending at the last frame.

    Example:
        >>> window_bounds(100, 40, 20)
        [(0, 40), (20, 60), (40, 80), (60, 100)]
        >>> window_bounds(90, 40, 20)              # the tail gets its own window
        [(0, 40), (20, 60), (40, 80), (50, 90)]
    """
    if num_frames < 1 or window < 1 or stride < 1:
        raise ValueError(f"need num_frames, window and stride >= 1, got {num_frames}, {window}, {stride}")
    if num_frames <= window:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return [(s, s + window) for s in starts]


@dataclass
class WindowScores:
    """Per-window scores of one video.

    Attributes:
        video: the path.
        probs: ``[W, C]`` softmax averaged over each window's views.
        bounds: ``(start_frame, end_frame)`` of each window, end exclusive.
        fps: frame rate (``None`` when unknown: times are then left out).
        num_frames: frames in the video: the frames that decode, for a file cut short.
        window, stride: in frames.
        views: ``CLIPSxCROPS`` per window.
        class_names: names of the classes.
        declared_frames: what the container declares, when more than decode (a file cut short).
    """

    video: str
    probs: torch.Tensor
    bounds: list[tuple[int, int]]
    fps: float | None
    num_frames: int
    window: int
    stride: int
    views: str
    class_names: list[str]
    declared_frames: int | None = None

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def seconds(self) -> float | None:
        """Duration of the video (its real frames), ``None`` without a frame rate."""
        return self.time(self.num_frames)

    @property
    def truncated(self) -> bool:
        """The file holds fewer frames than it declares; windows stop at its real end."""
        return self.declared_frames is not None and self.num_frames < self.declared_frames

    def time(self, frame: int) -> float | None:
        """Seconds at the start of ``frame`` (``None`` without a frame rate)."""
        return round(frame / self.fps, 3) if self.fps else None

    def top_k(self, k: int = 5) -> list[list[ClassScore]]:
        """The ``k`` best classes of every window."""
        return [top_classes(p, self.class_names, k) for p in self.probs]

    def records(self, k: int = 5) -> list[dict[str, Any]]:
        """One dict per window: index, frames, times and its top-k."""
        return [
            {"window": w, "start_frame": s, "end_frame": e, "start_time": self.time(s), "end_time": self.time(e),
             "top_k": [c.to_dict() for c in top]}
            for w, ((s, e), top) in enumerate(zip(self.bounds, self.top_k(k)))
        ]

    def segments(self) -> list[dict[str, Any]]:
        """Runs of consecutive windows with the same best class: frames, times, class, mean probability."""
        best = self.probs.argmax(dim=1).tolist()
        runs: list[dict[str, Any]] = []
        for w, c in enumerate(best):
            if runs and runs[-1]["index"] == c:
                runs[-1]["windows"].append(w)
            else:
                runs.append({"index": c, "windows": [w]})
        out = []
        for run in runs:
            first, last = run["windows"][0], run["windows"][-1]
            start, end = self.bounds[first][0], self.bounds[last][1]
            out.append({
                "start_frame": start, "end_frame": end, "start_time": self.time(start), "end_time": self.time(end),
                "index": run["index"], "label": self.class_names[run["index"]],
                "prob": float(self.probs[run["windows"], run["index"]].mean()), "windows": len(run["windows"]),
            })
        return out

    def timeline_classes(self, n: int = 5) -> list[int]:
        """The ``n`` classes to plot: highest probability reached in any window first."""
        peak = self.probs.max(dim=0).values
        return peak.topk(min(n, peak.numel())).indices.tolist()

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        damage = {"declared_frames": self.declared_frames, "truncated": True} if self.truncated else {}
        return {
            "video": self.video, "num_frames": self.num_frames, "seconds": self.seconds, **damage, "fps": self.fps,
            "window_frames": self.window,
            "stride_frames": self.stride, "views": self.views, "num_windows": len(self),
            "segments": self.segments(), "windows": self.records(k),
        }

    def write_csv(self, path: str | os.PathLike, k: int = 5) -> Path:
        """One row per window: ``window, start_frame, end_frame, start_time, end_time, top1_label, top1_index,
        top1_prob, ...`` (frames end-exclusive, times in seconds)."""
        import csv

        path = Path(path)
        k = min(k, self.probs.shape[1])
        header = ["window", "start_frame", "end_frame", "start_time", "end_time"]
        header += [f"top{r}_{field}" for r in range(1, k + 1) for field in ("label", "index", "prob")]
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for rec in self.records(k):
                row = [rec["window"], rec["start_frame"], rec["end_frame"], _blank(rec["start_time"]),
                       _blank(rec["end_time"])]
                for c in rec["top_k"]:
                    row += [c["label"], c["index"], f"{c['prob']:.6f}"]
                writer.writerow(row)
        return path

    def write_json(self, path: str | os.PathLike, k: int = 5, **extra: Any) -> Path:
        path = Path(path)
        path.write_text(json.dumps({**extra, **self.to_dict(k)}, indent=2) + "\n", encoding="utf-8")
        return path

    def plot_timeline(self, path: str | os.PathLike, *, num_classes: int = 5, title: str | None = None) -> Path:
        """A PNG of the probabilities of the top classes (see :meth:`timeline_classes`) along the video."""
        return plot_timeline(self, path, num_classes=num_classes, title=title)

    def save(
        self, output: str | os.PathLike, *, k: int = 5, num_classes: int = 5, stem: str | None = None, **extra: Any
    ) -> dict[str, Path]:
        """Write ``<stem>.windows.csv``, ``<stem>.windows.json`` and ``<stem>.timeline.png`` into ``output``."""
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        stem = stem or Path(self.video).stem
        return {
            "csv": self.write_csv(output / f"{stem}.windows.csv", k),
            "json": self.write_json(output / f"{stem}.windows.json", k, **extra),
            "png": self.plot_timeline(output / f"{stem}.timeline.png", num_classes=num_classes),
        }


def _blank(value: float | None) -> Any:
    return "" if value is None else value


def score_windows(
    video: str | os.PathLike,
    model: nn.Module,
    spec: ViewSpec,
    names: Sequence[str],
    *,
    window: int | str = DEFAULT_WINDOW,
    stride: int | str | None = None,
    fps: float | None = None,
    batch_size: int = 8,
    device: torch.device | None = None,
    backend: str | None = None,
    progress: bool = False,
) -> WindowScores:
    """:func:`predict_windows` with the model, views and names already resolved (the CLI's entry).

    Raises:
        VideoDecodeError: the video cannot be read.
        ValueError: a bad window or stride.
    """
    from tqdm.auto import tqdm

    path = os.fspath(video)
    with open_video(path, backend=backend) as reader:
        total = len(reader)
        declared = getattr(reader, "declared_frames", None)
    fps = fps or video_fps(path)
    span = parse_span(window, fps, name="window")
    step = parse_span(stride, fps, name="stride") if stride is not None else max(1, span // 2)
    bounds = window_bounds(total, span, step)
    scorer = ViewScorer(model, batch_size=batch_size, device=device)
    scores: dict[tuple[int, int], torch.Tensor] = {}
    with tqdm(total=len(bounds), desc=Path(path).name, unit="window", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:

        def finish(done: list) -> None:
            for bound, p in done:
                scores[bound] = p
                bar.update()

        try:
            _push_windows(path, bounds, spec, scorer, finish, backend=backend)
        except TruncatedVideoError as exc:
            # Cut short: the windows before the cut are scored; lay the windows out again over the
            # real frames (the same starts, a new tail window) and score those still missing.
            finish(scorer.flush())
            total = exc.num_frames
            bounds = window_bounds(total, span, step)
            bar.total = len(bounds)
            bar.refresh()
            _push_windows(path, [b for b in bounds if b not in scores], spec, scorer, finish, backend=backend)
        finish(scorer.flush())
    declared = declared if declared is not None and declared > total else None
    return WindowScores(path, torch.stack([scores[b] for b in bounds]), bounds, fps, total, span, step, spec.views,
                        list(names), declared)


def _push_windows(
    path: str,
    bounds: Sequence[tuple[int, int]],
    spec: ViewSpec,
    scorer: ViewScorer,
    finish: Callable[[list], None],
    *,
    backend: str | None,
) -> None:
    """Decode ``path`` once and push each window of ``bounds`` to ``scorer`` as soon as its frames arrived
    (keyed by its bounds; ``finish`` gets what the scorer returns).

    Raises:
        TruncatedVideoError: the file ends before the last window (the windows before the cut were pushed).
    """
    if not bounds:
        return
    # Each window is a short video: the spec's clips, shifted to its start (always uniform sampling).
    clips = [[[s + i for i in clip] for clip in spec.clip_indices(e - s, sampling="uniform")] for s, e in bounds]
    last_use: dict[int, int] = {}
    for w, window_clips in enumerate(clips):
        for clip in window_clips:
            for i in clip:
                last_use[i] = w
    ready_at = [max(max(clip) for clip in window_clips) for window_clips in clips]  # non-decreasing in w
    release: dict[int, list[int]] = {}
    for i, w in last_use.items():
        release.setdefault(w, []).append(i)

    transform = spec.transform()
    cache: dict[int, torch.Tensor] = {}
    next_window = 0
    for index, frame in iter_frames(path, sorted(last_use), backend=backend):
        # Resize, crop and normalise act on each frame alike: transform frames once, as they arrive.
        cache[index] = transform(frame.permute(2, 0, 1).unsqueeze(0))
        while next_window < len(bounds) and ready_at[next_window] <= index:
            views = spec.stack([torch.cat([cache[i] for i in clip], dim=-4) for clip in clips[next_window]])
            finish(scorer.push(bounds[next_window], views))
            for i in release.get(next_window, ()):
                del cache[i]
            next_window += 1


def predict_windows(
    video: str | os.PathLike,
    model: str | nn.Module | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_segments: int | None = None,
    window: int | str = DEFAULT_WINDOW,
    stride: int | str | None = None,
    views: str | Sequence[int] = "1x1",
    input_size: int | None = None,
    full_res: bool | None = None,
    labels: str | os.PathLike | Sequence[str] | None = None,
    fps: float | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    backend: str | None = None,
    progress: bool = False,
) -> WindowScores:
    """Class probabilities of windows sliding along a video.

    Args:
        video: a video file (or frame folder, with spans in frames or ``fps`` given).
        model: ``NAME[.TAG]`` or a module (see :func:`tdnzoo.predict`).
        window: window span: frames (``64``) or seconds (``"2s"``; default 2 seconds).
        stride: step between window starts, frames or seconds (default: half the window).
        views: ``CLIPSxCROPS`` per window (default ``1x1``: a window is already a short clip).
        fps: frame rate for spans in seconds (default: the file's).
        Other arguments as in :func:`tdnzoo.predict`.

    Raises:
        VideoDecodeError: the video cannot be read.

    Example:
        >>> scores = predict_windows("long.mp4", "tdn_resnet50.k400_8f", window="2s", stride="1s")
        >>> scores.save("out")          # long.windows.csv, long.windows.json, long.timeline.png
    """
    net, _ = load_predict_model(model, checkpoint=checkpoint, num_segments=num_segments)
    spec = resolve_view_spec(net, views=views, input_size=input_size, full_res=full_res)
    names = class_names_of(net, labels)
    device = _place(net, device, isinstance(model, nn.Module))
    return score_windows(video, net, spec, names, window=window, stride=stride, fps=fps, batch_size=batch_size,
                         device=device, backend=backend, progress=progress)
