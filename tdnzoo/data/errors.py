"""Data errors. All are :class:`tdnzoo.TdnzooError`, so one ``except`` catches every tdnzoo error."""
from __future__ import annotations

from ..errors import TdnzooError

__all__ = ["DataError", "TruncatedVideoError", "VideoDecodeError"]


class DataError(TdnzooError, ValueError):
    """A dataset that cannot be used: missing root or list file, malformed list line, empty
    class folder, label outside the class range. Raised when the dataset is built, before training."""


class VideoDecodeError(TdnzooError, RuntimeError):
    """A video file or frame folder that cannot be decoded (corrupt, truncated, no video stream)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TruncatedVideoError(VideoDecodeError):
    """Frames were asked for past the real end of a video that holds fewer frames than it declares
    (a file cut short: its header promises ``declared_frames``, only ``num_frames`` decode).

    Readers raise it instead of inventing the missing frames; callers sample again within
    ``num_frames`` (see :func:`tdnzoo.data.damage.read_sampled`).
    """

    def __init__(self, path: str, declared_frames: int, num_frames: int) -> None:
        super().__init__(
            f"{path} holds {num_frames} decodable frames but declares {declared_frames} (cut short?)", path
        )
        self.declared_frames = declared_frames
        self.num_frames = num_frames
