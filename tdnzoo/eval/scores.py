"""Scores of an evaluation: softmax averaged over each video's views, and the accuracies read from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["EvalResult", "average_view_scores"]


@dataclass
class EvalResult:
    """Scores of one evaluation. Accuracies are percentages."""

    probs: torch.Tensor  # [N, C] softmax averaged over views
    labels: torch.Tensor  # [N]
    views: tuple[int, int]
    class_names: list[str] | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def num_videos(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def topk(self, k: int) -> float:
        k = min(k, self.num_classes)
        hits = self.probs.topk(k, dim=1).indices.eq(self.labels.view(-1, 1)).any(dim=1)
        return 100.0 * float(hits.float().mean()) if self.num_videos else 0.0

    @property
    def top1(self) -> float:
        return self.topk(1)

    @property
    def top5(self) -> float:
        return self.topk(5)

    @property
    def confusion(self) -> torch.Tensor:
        """``[C, C]`` counts: row = true class, column = predicted class."""
        pred = self.probs.argmax(dim=1)
        flat = self.labels * self.num_classes + pred
        return torch.bincount(flat, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    @property
    def per_class_accuracy(self) -> dict[int, float]:
        """Accuracy of every class present in the labels."""
        conf = self.confusion
        totals = conf.sum(dim=1)
        return {c: 100.0 * float(conf[c, c]) / float(totals[c]) for c in range(self.num_classes) if totals[c] > 0}

    @property
    def mean_class_accuracy(self) -> float:
        """Mean over the classes present of their accuracy (recall)."""
        per = self.per_class_accuracy
        return sum(per.values()) / len(per) if per else 0.0

    def to_dict(self) -> dict[str, Any]:
        names = self.class_names
        return {
            "num_videos": self.num_videos,
            "num_classes": self.num_classes,
            "views": f"{self.views[0]}x{self.views[1]}",
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "per_class_accuracy": {
                (names[c] if names and c < len(names) else str(c)): acc for c, acc in self.per_class_accuracy.items()
            },
            "skipped_videos": len(self.skipped),
            "skipped_paths": list(self.skipped),
        }


def average_view_scores(logits: torch.Tensor, num_views: int) -> torch.Tensor:
    """Softmax per view, averaged over each video's ``num_views`` consecutive views: ``[B*V, C] -> [B, C]``.

    The official protocols average probabilities, not logits.
    """
    return logits.float().softmax(dim=1).view(-1, num_views, logits.shape[-1]).mean(dim=1)
