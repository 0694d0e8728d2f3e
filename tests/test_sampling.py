"""Frame indices pinned against the official TDN / TSM sampling rules (ops/dataset.py there, 1-based;
0-based here)."""
from __future__ import annotations

import pytest
import torch

from tdnzoo.data.sampling import (
    expand_windows,
    multi_clip_indices,
    train_indices,
    train_starts,
    val_indices,
    val_starts,
)


def official_val_starts(n: int, segments: int, length: int) -> list[int]:
    """The official ``_get_val_indices`` restated (minus its +1)."""
    if n > segments + length - 1:
        tick = (n - length + 1) / float(segments)
        return [int(tick / 2.0 + tick * x) for x in range(segments)]
    return [0] * segments


@pytest.mark.parametrize(
    "n, segments, length, expected",
    [
        (100, 8, 1, [6, 18, 31, 43, 56, 68, 81, 93]),
        (50, 8, 5, [2, 8, 14, 20, 25, 31, 37, 43]),
        (13, 8, 5, [0, 1, 2, 3, 5, 6, 7, 8]),  # just long enough: 13 > 8 + 5 - 1
        (12, 8, 5, [0] * 8),  # too short: every segment starts at frame 0
        (5, 8, 1, [0] * 8),
        (9, 8, 1, [0, 1, 2, 3, 5, 6, 7, 8]),
    ],
)
def test_val_starts_pinned(n, segments, length, expected):
    assert val_starts(n, segments, length) == expected


def test_val_matches_official_rule_on_a_sweep():
    for n in range(1, 70):
        for segments, length in [(1, 1), (3, 1), (8, 1), (8, 5), (16, 5), (4, 5)]:
            assert val_starts(n, segments, length) == official_val_starts(n, segments, length), (n, segments, length)


def test_windows_are_consecutive_segment_major_and_clamped():
    assert val_indices(100, 2, 5) == [24, 25, 26, 27, 28, 72, 73, 74, 75, 76]
    # 3 frames, 2 segments of 5: both windows start at 0 and repeat the last frame (official `p < len` rule).
    assert val_indices(3, 2, 5) == [0, 1, 2, 2, 2, 0, 1, 2, 2, 2]
    assert expand_windows([7, 8], 3, 10) == [7, 8, 9, 8, 9, 9]


@pytest.mark.parametrize("n, segments, length", [(100, 8, 1), (50, 8, 5), (41, 4, 5), (16, 8, 1)])
def test_train_starts_stay_in_their_segment(n, segments, length):
    duration = (n - length + 1) // segments
    g = torch.Generator().manual_seed(0)
    seen_first = set()
    for _ in range(200):
        starts = train_starts(n, segments, length, generator=g)
        assert len(starts) == segments
        for i, s in enumerate(starts):
            assert i * duration <= s < (i + 1) * duration
        seen_first.add(starts[0])
    assert seen_first == set(range(duration))  # every offset of randint(duration) happens
    assert len(train_indices(n, segments, length, generator=g)) == segments * length


def test_train_short_videos_repeat_as_official():
    g = torch.Generator().manual_seed(1)
    # 10 frames, 8 segments of 5: 6 possible starts < 8 segments, 10 > 8 frames -> sorted draws in [0, 6).
    draws = [train_starts(10, 8, 5, generator=g) for _ in range(100)]
    assert all(d == sorted(d) and 0 <= min(d) and max(d) <= 5 for d in draws)
    assert any(len(set(d)) < 8 for d in draws)  # repetition
    # exactly one start per frame when the segment length is 1
    assert train_starts(8, 8, 1, generator=g) == list(range(8))
    # no more frames than segments -> all zeros (official `np.zeros`)
    assert train_starts(7, 8, 1, generator=g) == [0] * 8
    assert train_indices(3, 2, 5, generator=g) == [0, 1, 2, 2, 2, 0, 1, 2, 2, 2]


def test_train_is_reproducible_with_a_generator():
    a = train_indices(300, 8, 5, generator=torch.Generator().manual_seed(3))
    b = train_indices(300, 8, 5, generator=torch.Generator().manual_seed(3))
    assert a == b


def test_multi_clip_indices():
    assert multi_clip_indices(100, 8, 1, num_clips=1) == [val_indices(100, 8, 1)]
    # tick 25: clip 0 at a quarter of each segment, clip 1 at three quarters
    assert multi_clip_indices(100, 4, 1, num_clips=2) == [[6, 31, 56, 81], [18, 43, 68, 93]]
    clips = multi_clip_indices(300, 8, 5, num_clips=10)
    assert len(clips) == 10 and all(len(c) == 40 for c in clips)
    firsts = [c[0] for c in clips]
    assert firsts == sorted(firsts) and len(set(firsts)) == 10 and firsts[-1] + 4 < 300 / 8 + 4
    assert multi_clip_indices(6, 8, 1, num_clips=3) == [[0] * 8] * 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one frame"):
        val_indices(0, 8)
    with pytest.raises(ValueError, match="num_segments"):
        train_indices(10, 0)
    with pytest.raises(ValueError, match="num_clips"):
        multi_clip_indices(10, 2, num_clips=0)
