"""Accuracy helpers and the per-epoch metrics log (JSON lines or CSV)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["MetricsLog", "topk_correct"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have their label among the top-k scores, for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


class MetricsLog:
    """One record per epoch in ``metrics.jsonl`` or ``metrics.csv``.

    On resume, records of epochs after the checkpoint (from the interrupted run) are dropped,
    so the log matches the weights.
    """

    def __init__(self, folder: str | os.PathLike, fmt: str = "jsonl") -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"metrics format must be 'jsonl' or 'csv', got {fmt!r}")
        self.fmt = fmt
        self.path = Path(folder) / f"metrics.{fmt}"

    def read(self) -> list[dict[str, Any]]:
        """All records so far."""
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        if self.fmt == "jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return [dict(row) for row in csv.DictReader(text.splitlines())]

    def truncate(self, last_epoch: int) -> None:
        """Keep records with ``epoch <= last_epoch``."""
        rows = [r for r in self.read() if int(float(r.get("epoch", 0))) <= last_epoch]
        self.path.unlink(missing_ok=True)
        for row in rows:
            self.append(row)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=False) + "\n")
            return
        flat = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in record.items()}
        rows = self.read() + [flat]
        header = list(dict.fromkeys(k for r in rows for k in r))
        # A few lines per run: rewriting keeps one header even when later epochs add columns.
        with open(self.path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
