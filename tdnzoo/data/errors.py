"""Data errors. Both are :class:`tdnzoo.TdnzooError`, so one ``except`` catches every tdnzoo error."""
from __future__ import annotations

from ..errors import TdnzooError

__all__ = ["DataError", "VideoDecodeError"]


class DataError(TdnzooError, ValueError):
    """A dataset that cannot be used: missing root or list file, malformed list line, empty
    class folder, label outside the class range. Raised when the dataset is built, before training."""


class VideoDecodeError(TdnzooError, RuntimeError):
    """A video file or frame folder that cannot be decoded (corrupt, truncated, no video stream)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
