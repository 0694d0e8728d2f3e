"""One error hierarchy users can catch: every tdnzoo error is a ``TdnzooError``."""
from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "TdnzooError",
    "UnknownModelError",
    "UnsupportedBackboneError",
]


class TdnzooError(Exception):
    """Base class of tdnzoo's errors."""


class UnknownModelError(TdnzooError, ValueError):
    """A model name, method prefix or pretrained tag that tdnzoo does not know."""


class UnsupportedBackboneError(TdnzooError, ValueError):
    """A timm model that tdnzoo cannot turn into a video model."""


class CheckpointError(TdnzooError, RuntimeError):
    """A checkpoint that cannot be read: missing, truncated, corrupt, or failing its hash."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model; lists what is wrong."""

    def __init__(self, message: str, missing: list[str] | None = None, unexpected: list[str] | None = None,
                 mismatched: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []
