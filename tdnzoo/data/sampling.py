"""Which frames a clip is made of: TSN segment sampling, as the official TDN and TSM code does it.

A video of ``num_frames`` frames is cut into ``num_segments`` equal segments; each segment
contributes a window of ``frames_per_segment`` consecutive frames (1 for TSN/TSM, 5 for TDN),
so a clip has ``num_segments * frames_per_segment`` frame indices, segment-major. Indices are
0-based here (the official code counts from 1).

* training (:func:`train_indices`): a random window start inside each segment;
* evaluation (:func:`val_indices`): the window starts at the centre of each segment;
* multi-clip testing (:func:`multi_clip_indices`): ``num_clips`` clips whose starts are evenly spaced
  inside each segment (clip ``k`` of ``K`` at fraction ``(k + 0.5) / K``); one clip is the
  evaluation clip.

Short videos follow the official rules, so frames repeat: with fewer window starts than
segments, training draws sorted random starts with replacement (or starts every segment at
frame 0 when the video has no more frames than segments), evaluation starts every segment at
frame 0, and a window running past the last frame repeats the last frame.

Example:
    >>> val_indices(100, num_segments=4)
    [12, 37, 62, 87]
    >>> val_indices(100, num_segments=2, frames_per_segment=5)
    [24, 25, 26, 27, 28, 72, 73, 74, 75, 76]
"""
from __future__ import annotations

import torch

__all__ = [
    "expand_windows",
    "multi_clip_indices",
    "multi_clip_starts",
    "train_indices",
    "train_starts",
    "val_indices",
    "val_starts",
]


def _check(num_frames: int, num_segments: int, frames_per_segment: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if frames_per_segment < 1:
        raise ValueError(f"frames_per_segment must be >= 1, got {frames_per_segment}")


def expand_windows(starts: list[int], frames_per_segment: int, num_frames: int) -> list[int]:
    """``frames_per_segment`` consecutive indices from each start, clamped to the last frame."""
    return [min(s + i, num_frames - 1) for s in starts for i in range(frames_per_segment)]


def train_starts(
    num_frames: int, num_segments: int, frames_per_segment: int = 1, *, generator: torch.Generator | None = None
) -> list[int]:
    """Random window starts for training, one per segment (official ``_sample_indices``).

    With ``d = (num_frames - frames_per_segment + 1) // num_segments`` (the segment length in
    possible starts): when ``d > 0``, segment ``i`` starts at ``i*d + randint(d)``; otherwise,
    when the video has more frames than segments, sorted random starts in
    ``[0, num_frames - frames_per_segment]`` (repeats allowed); otherwise all at 0.

    Args:
        generator: a ``torch.Generator`` for reproducible draws; the global one when ``None``.
    """
    _check(num_frames, num_segments, frames_per_segment)
    possible = num_frames - frames_per_segment + 1
    duration = possible // num_segments
    if duration > 0:
        jitter = torch.randint(duration, (num_segments,), generator=generator)
        return [i * duration + int(j) for i, j in enumerate(jitter)]
    if num_frames > num_segments:
        # The official code draws from randint(num_frames - new_length + 1); keep at least one start.
        draws = torch.randint(max(possible, 1), (num_segments,), generator=generator)
        return sorted(int(d) for d in draws)
    return [0] * num_segments


def val_starts(num_frames: int, num_segments: int, frames_per_segment: int = 1) -> list[int]:
    """Window starts at segment centres (official ``_get_val_indices``); all 0 for short videos."""
    return multi_clip_starts(num_frames, num_segments, frames_per_segment, num_clips=1)[0]


def multi_clip_starts(num_frames: int, num_segments: int, frames_per_segment: int = 1, *, num_clips: int = 1) -> list[list[int]]:
    """Window starts of ``num_clips`` evenly spaced clips, one list per clip.

    With ``tick = (num_frames - frames_per_segment + 1) / num_segments``, clip ``k`` starts
    segment ``i`` at ``int(tick * (k + 0.5) / num_clips + tick * i)``; ``num_clips=1`` is the
    official centre rule ``int(tick / 2 + tick * i)``. Videos with no more than
    ``num_segments + frames_per_segment - 1`` frames start every segment at 0 (official).
    """
    _check(num_frames, num_segments, frames_per_segment)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if num_frames <= num_segments + frames_per_segment - 1:
        return [[0] * num_segments for _ in range(num_clips)]
    tick = (num_frames - frames_per_segment + 1) / float(num_segments)
    # ``tick * 0.5 / 1`` is exactly ``tick / 2.0``: one clip reproduces the official indices bit for bit.
    return [
        [int(tick * (k + 0.5) / num_clips + tick * i) for i in range(num_segments)] for k in range(num_clips)
    ]


def train_indices(
    num_frames: int, num_segments: int, frames_per_segment: int = 1, *, generator: torch.Generator | None = None
) -> list[int]:
    """0-based frame indices of a training clip: ``num_segments * frames_per_segment`` of them.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> len(train_indices(50, 8, 5, generator=g))
        40
    """
    starts = train_starts(num_frames, num_segments, frames_per_segment, generator=generator)
    return expand_windows(starts, frames_per_segment, num_frames)


def val_indices(num_frames: int, num_segments: int, frames_per_segment: int = 1) -> list[int]:
    """0-based frame indices of the evaluation clip (segment centres)."""
    return expand_windows(val_starts(num_frames, num_segments, frames_per_segment), frames_per_segment, num_frames)


def multi_clip_indices(
    num_frames: int, num_segments: int, frames_per_segment: int = 1, *, num_clips: int = 1
) -> list[list[int]]:
    """0-based frame indices of ``num_clips`` evenly spaced test clips, one list per clip."""
    return [
        expand_windows(starts, frames_per_segment, num_frames)
        for starts in multi_clip_starts(num_frames, num_segments, frames_per_segment, num_clips=num_clips)
    ]
