"""Frames of long videos, decoded once, front to back.

:class:`~tdnzoo.data.decode.PyAVReader` decodes from the start for every request, which is right
for one clip per video but quadratic for the hundreds of windows of a long video. :func:`iter_frames`
walks a file once and hands out only the frames asked for, so memory holds what the pending windows
need and no more. Indices are the decode order, as the readers count them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..data.damage import note_truncated, refuse_images
from ..data.decode import open_video
from ..data.errors import VideoDecodeError

__all__ = ["iter_frames", "video_fps"]


def video_fps(path: str | os.PathLike) -> float | None:
    """Frame rate of a video file (its average rate), or ``None`` for frame folders and unknown rates."""
    if Path(path).is_dir():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    return float(rate) if rate else None


def iter_frames(
    path: str | os.PathLike, indices: Sequence[int], *, backend: str | None = None, chunk: int = 32
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(index, uint8 [H, W, 3] frame)`` for the sorted, distinct ``indices``, in order.

    Video files (default backend) are decoded sequentially in one pass. A file that holds fewer
    frames than it declares yields the frames it holds, then raises
    :class:`~tdnzoo.data.errors.TruncatedVideoError` (with its real count) for the rest: no frame is
    invented. Frame folders and other backends are read through
    :func:`~tdnzoo.data.decode.open_video` in chunks.

    Raises:
        TruncatedVideoError: an index past the real end of a file cut short.
        VideoDecodeError: the video cannot be read, or is an image.
        ValueError: an index past the end of a whole video.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return
    if wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    if backend is None and not Path(path).is_dir():
        yield from _iter_pyav(str(path), wanted)
        return
    with open_video(path, backend=backend) as reader:
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            yield from zip(part, reader.get_frames(part))


def _iter_pyav(path: str, wanted: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
    import av

    if not os.path.isfile(path):
        raise VideoDecodeError(f"video file not found: {path}", path)
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(f"cannot open video {path}: {exc}", path) from exc
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path} has no video stream", path)
        refuse_images(container, path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        position, decoded = 0, 0
        try:
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i == wanted[position]:
                    yield i, torch.from_numpy(frame.to_ndarray(format="rgb24"))
                    position += 1
                    if position == len(wanted):
                        return
        except av.FFmpegError as exc:
            if not decoded:
                raise VideoDecodeError(f"cannot decode {path}: {exc}", path) from exc
            # after some frames: the end of a file cut short (see PyAVReader.get_frames)
        except (ValueError, MemoryError) as exc:
            raise VideoDecodeError(f"cannot decode {path}: {exc}", path) from exc
        if not decoded:
            raise VideoDecodeError(f"{path} holds no decodable video frames", path)
        # A container that declares no count (WebM): the caller's indices came from its packet count.
        declared = int(stream.frames or 0) or wanted[-1] + 1
        if decoded < declared:
            raise note_truncated(path, declared, decoded, stacklevel=3)
        raise ValueError(f"frame {wanted[position]} is past the end of {path} ({decoded} frames)")
