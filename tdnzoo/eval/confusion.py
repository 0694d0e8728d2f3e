"""The confusion-matrix figure of an evaluation report."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["plot_confusion"]


def plot_confusion(confusion: torch.Tensor, names: Sequence[str] | None, path: Path, title: str) -> None:
    """A PNG of the row-normalised confusion matrix (names on the axes up to 40 classes, counts up to 12)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = confusion.shape[0]
    norm = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    size = min(4 + n * 0.35, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 40:
        labels = [names[i] if names and i < len(names) else str(i) for i in range(n)]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
