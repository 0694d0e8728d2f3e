"""Damaged or wrong input: videos cut short, and images posing as videos.

A video file cut short (a download that stopped; a faststart MP4, whose index sits at the start and
still lists every frame) declares more frames than it holds. Its real length is known only once
decoding stops early, so the readers and the samplers share one rule:

* a reader asked for a frame past the point where decoding stopped calls :func:`note_truncated`, which
  warns once per file (:class:`TruncatedVideoWarning`, with both counts), remembers the real count for
  later openings in this process (:func:`known_length`), and gives the :class:`TruncatedVideoError`
  the reader raises;
* :func:`read_sampled` samples indices from the reader's length and, when the reader raises, samples
  again within the real length: a clip is made of frames the file holds, never of a repeated last frame.

:func:`refuse_images` stops an image file renamed as a video (FFmpeg opens a PNG through its
``png_pipe`` demuxer as a one-frame "video") with a clear error.

Example:
    >>> with open_video("cut.mp4") as reader:        # declares 250 frames, 124 decode
    ...     read = read_sampled(reader, lambda n: val_indices(n, 8))
    >>> read.num_frames, read.declared_frames, read.truncated
    (124, 250, True)
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from .errors import TruncatedVideoError, VideoDecodeError

__all__ = [
    "SampledFrames",
    "TruncatedVideoError",
    "TruncatedVideoWarning",
    "is_image_format",
    "known_length",
    "note_truncated",
    "read_sampled",
    "refuse_images",
]


class TruncatedVideoWarning(UserWarning):
    """A video holds fewer frames than it declares; it is used at its real length (once per file)."""


# (real path, size, mtime) -> (declared, real) frame counts of the files found short in this process.
_SHORT_FILES: dict[tuple[str, int, int], tuple[int, int]] = {}


def _file_key(path: str | os.PathLike) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), st.st_size, st.st_mtime_ns  # a file replaced in place is a new file


def known_length(path: str | os.PathLike) -> int | None:
    """The real frame count of ``path`` when this process found it shorter than it declares, else ``None``."""
    if not _SHORT_FILES:  # the usual case: no stat or realpath for every reader a dataset opens
        return None
    key = _file_key(path)
    found = _SHORT_FILES.get(key) if key is not None else None
    return found[1] if found is not None else None


def note_truncated(path: str, declared_frames: int, num_frames: int, *, stacklevel: int = 4) -> TruncatedVideoError:
    """Record that ``path`` decodes ``num_frames`` of its ``declared_frames``, warn the first time, and
    return the error for the reader to raise.

    The warning comes once per file and process (DataLoader workers are processes of their own);
    ``stacklevel`` as in :func:`warnings.warn`, counted from here (4: the caller of a reader's ``get_frames``).
    """
    key = _file_key(path)
    if key is not None and key not in _SHORT_FILES:
        _SHORT_FILES[key] = (int(declared_frames), int(num_frames))
        warnings.warn(
            f"{path} declares {declared_frames} frames but only {num_frames} decode (the file is cut short?); "
            f"using its {num_frames} frames",
            TruncatedVideoWarning,
            stacklevel=stacklevel,
        )
    return TruncatedVideoError(path, int(declared_frames), int(num_frames))


class SampledFrames(NamedTuple):
    """Frames read by :func:`read_sampled`, with the length they were sampled from."""

    frames: torch.Tensor
    """uint8 ``[N, H, W, 3]``."""
    num_frames: int
    """Frames of the video as far as decoding found: the real length of a file cut short."""
    declared_frames: int | None
    """What the container (or list file) declares, ``None`` when the reader does not say."""

    @property
    def truncated(self) -> bool:
        """The video holds fewer frames than it declares."""
        return self.declared_frames is not None and self.num_frames < self.declared_frames


def read_sampled(reader: Any, sample: Callable[[int], Sequence[int]]) -> SampledFrames:
    """Frames at ``sample(len(reader))``, sampled again within the real length when the video turns out
    shorter than it declares (``sample`` gets the frame count, returns 0-based indices).

    Raises:
        VideoDecodeError: the video cannot be read.
    """
    try:
        frames = reader.get_frames(sample(len(reader)))
    except TruncatedVideoError as exc:
        frames = reader.get_frames(sample(exc.num_frames))
    return SampledFrames(frames, len(reader), getattr(reader, "declared_frames", None))


def is_image_format(format_name: str) -> bool:
    """Whether an FFmpeg demuxer name (``container.format.name``) is a still-image reader.

    ``image2`` reads image files and sequences, the ``*_pipe`` demuxers (``png_pipe``, ``jpeg_pipe``,
    ``webp_pipe``, ...) single images; no video container has such a name.
    """
    names = format_name.split(",")
    return any(n in ("image2", "image2pipe") or n.endswith("_pipe") for n in names)


def refuse_images(container: Any, path: str) -> None:
    """Raise when a PyAV ``container`` is a still image, not a video.

    Raises:
        VideoDecodeError: ``path`` is an image file (whatever its extension).
    """
    name = getattr(getattr(container, "format", None), "name", "") or ""
    if is_image_format(name):
        raise VideoDecodeError(
            f"{path} is an image ({name.split(',')[0].removesuffix('_pipe')}), not a video; "
            "give a video file or a folder of frames",
            path,
        )
