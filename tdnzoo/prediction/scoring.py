"""Forward passes of fixed size over items with any number of views.

Items (videos, or windows of a video) bring ``V`` views each; :class:`ViewScorer` packs views
of consecutive items into batches of ``batch_size`` views, so memory is bounded whatever the
protocol (30 views of one Kinetics video, or one view each of many clips), and returns each
item's softmax averaged over its views once all of them went through the model.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import torch
from torch import nn

from ..eval.scores import average_view_scores

__all__ = ["ViewScorer"]


class ViewScorer:
    """Scores of items, ``batch_size`` views per forward pass.

    Example:
        >>> scorer = ViewScorer(model, batch_size=8)
        >>> done = scorer.push("a.mp4", views_a)       # [(key, probs [C]), ...] finished so far
        >>> done += scorer.flush()
    """

    def __init__(self, model: nn.Module, *, batch_size: int = 8, device: torch.device | str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self._queue: deque[tuple[Hashable, torch.Tensor]] = deque()  # views not yet scored
        self._logits: dict[Hashable, list[torch.Tensor]] = {}
        self._sizes: dict[Hashable, int] = {}
        self._pending = 0

    def push(self, key: Hashable, views: torch.Tensor) -> list[tuple[Hashable, torch.Tensor]]:
        """Queue ``views`` (``[V, T, 3, H, W]``) of item ``key``; score every full batch now."""
        if views.dim() != 5 or views.shape[0] < 1:
            raise ValueError(f"expected views [V, T, 3, H, W] with V >= 1, got shape {tuple(views.shape)}")
        self._queue.append((key, views))
        self._logits[key] = []
        self._sizes[key] = int(views.shape[0])
        self._pending += int(views.shape[0])
        done = []
        while self._pending >= self.batch_size:
            done += self._step(self.batch_size)
        return done

    def flush(self) -> list[tuple[Hashable, torch.Tensor]]:
        """Score what is left."""
        done = []
        while self._pending:
            done += self._step(min(self._pending, self.batch_size))
        return done

    @torch.no_grad()
    def _step(self, n: int) -> list[tuple[Hashable, torch.Tensor]]:
        parts, owners = [], []
        while n:
            key, views = self._queue[0]
            take = min(n, views.shape[0])
            parts.append(views[:take])
            owners.append((key, take))
            if take == views.shape[0]:
                self._queue.popleft()
            else:
                self._queue[0] = (key, views[take:])
            n -= take
            self._pending -= take
        batch = torch.cat(parts).to(self.device, non_blocking=True)
        logits = self.model(batch).float().cpu()
        done, offset = [], 0
        for key, take in owners:
            self._logits[key].append(logits[offset : offset + take])
            offset += take
            if sum(len(t) for t in self._logits[key]) == self._sizes[key]:
                scores = average_view_scores(torch.cat(self._logits.pop(key)), self._sizes.pop(key))[0]
                done.append((key, scores))
        return done
