"""Evaluation with the official protocols: ``CLIPSxCROPS`` views per video, softmax averaged over views.

* :func:`evaluate`: run a model over a test-mode :class:`~tdnzoo.data.VideoDataset` (one process,
  or sharded under torchrun and gathered), returning an :class:`EvalResult` with top-1, top-5,
  mean class accuracy and the confusion matrix.
* :func:`load_eval_model`: a model from a zoo name/tag, a weights file, or a training checkpoint.
* :func:`write_report`: ``report.json``, ``report.md`` (published numbers beside measured ones
  when the model's pretrained cfg has them) and ``confusion.png``.

Example:
    >>> model = load_eval_model("tdn_resnet50.sthv1_8f")
    >>> ds = build_eval_dataset(model, dataset="sthv1", root="data", list_file="val.txt", views="1x1")
    >>> result = evaluate(model, ds, batch_size=4)
    >>> result.top1, result.top5
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .data.datasets import VideoDataset, build_dataset
from .data.transforms import eval_transform, parse_views
from .errors import CheckpointError, TdnzooError

__all__ = [
    "EvalResult",
    "average_view_scores",
    "build_eval_dataset",
    "evaluate",
    "load_eval_model",
    "published_numbers",
    "write_report",
]

_log = logging.getLogger(__name__)


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


def _read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a tdnzoo training checkpoint (empty for other weight files)."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not ours to judge here: load_checkpoint reports unreadable files
        return {}
    if isinstance(obj, dict) and obj.get("format") == "tdnzoo-train":
        return {k: v for k, v in obj.items() if k not in ("model", "optimizer", "scheduler", "scaler", "rng")}
    return {}


def load_eval_model(
    model_name: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_segments: int | None = None,
    pretrained: bool | None = None,
) -> nn.Module:
    """A model ready to evaluate.

    Args:
        model_name: ``arch`` or ``arch.tag``; optional with a tdnzoo training checkpoint (its own name is used).
        checkpoint: weights to load strictly: a tdnzoo training checkpoint (``last.pt``/``best.pt``),
            safetensors, or an official TDN/TSM release.
        num_segments: segments per clip (default: the checkpoint's or the tag's).
        pretrained: load the tag's published weights; default: when there is a tag and no checkpoint.

    Raises:
        TdnzooError: no weights at all (neither a tag nor a checkpoint), or they do not fit.
    """
    from .models import create_model
    from .models.registry import split_tag

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    meta = _read_checkpoint_meta(checkpoint) if checkpoint is not None else {}
    args = meta.get("args") or {}
    if model_name is None:
        model_name = meta.get("model_name")
        if model_name is None:
            raise TdnzooError("--model is required unless --checkpoint is a tdnzoo training checkpoint")
    _, tag = split_tag(model_name)
    if pretrained is None:
        pretrained = tag is not None and checkpoint is None
    if not pretrained and checkpoint is None:
        raise TdnzooError(
            f"no weights to evaluate for '{model_name}': give a pretrained tag (e.g. 'tdn_resnet50.sthv1_8f', "
            "see `tdnzoo list --pretrained`) or --checkpoint PATH"
        )
    if num_segments is None and meta:
        num_segments = (meta.get("model_args") or {}).get("num_segments")
    kwargs = dict(args.get("model_kwargs") or {})
    model = create_model(
        model_name, pretrained=pretrained, num_segments=num_segments, checkpoint_path=checkpoint,
        num_classes=meta.get("num_classes"), **kwargs,
    )
    if meta.get("class_names"):
        model.pretrained_cfg.setdefault("label_names", list(meta["class_names"]))
    model.eval()
    return model


def build_eval_dataset(
    model: nn.Module,
    *,
    dataset: str = "folder",
    root: str | os.PathLike,
    split: str = "val",
    list_file: str | os.PathLike | None = None,
    views: str | Sequence[int] = "1x1",
    input_size: int | None = None,
    full_res: bool = True,
    class_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> VideoDataset:
    """A test-mode dataset shaped for ``model``: its segments, frames per segment, input size, mean/std.

    Args:
        views: ``CLIPSxCROPS``: ``1x1`` (centre crop), ``1x3``, ``10x3`` (Kinetics), ...
        full_res: 3-crop views crop the whole resized short side (official), see :func:`eval_transform`.
        class_names: fix label order for the folder layout (default: the model's ``label_names``
            when their count matches the model's classes).
    """
    clips, crops = parse_views(views)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if class_names is None and dataset == "folder":
        names = cfg.get("label_names")
        if names and len(names) == getattr(model, "num_classes", -1):
            class_names = list(names)
    return build_dataset(
        dataset, root=root, split=split, list_file=list_file, mode="test", num_clips=clips,
        num_segments=model.num_segments, frames_per_segment=model.frames_per_segment,
        transform=eval_transform(model, input_size=input_size, num_crops=crops, full_res=full_res),
        num_classes=getattr(model, "num_classes", None), class_names=class_names, **kwargs,
    )


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset: VideoDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset.load(index)
        return sample.clip, sample.label, index, "\n".join(sample.skipped)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: VideoDataset,
    *,
    batch_size: int = 1,
    workers: int = 0,
    device: str | torch.device | None = None,
    amp: str = "none",
    progress: bool = False,
) -> EvalResult:
    """Scores of ``model`` on a test-mode dataset (items ``[V, T, 3, H, W]``).

    Each view goes through the model; softmax scores are averaged over the ``V`` views of a video.
    Under torchrun (an initialised process group) each process takes every ``world_size``-th video
    and the scores are gathered on every process.
    """
    from .train.distributed import ShardSampler, all_gather_objects

    if dataset.mode != "test":
        raise ValueError("evaluate() needs a dataset built with mode='test' (see build_eval_dataset)")
    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist_on else 0
    world = torch.distributed.get_world_size() if dist_on else 1
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.eval().to(device)
    loader = DataLoader(
        _Indexed(dataset), batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world),
        num_workers=workers, pin_memory=device.type == "cuda",
    )
    if progress and rank == 0:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="evaluate", dynamic_ncols=True)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
        if amp in ("bf16", "fp16") else None
    )
    indices, probs, labels, skipped = [], [], [], []
    for clips, label, index, bad in loader:
        b, v = clips.shape[:2]
        flat = clips.flatten(0, 1).to(device, non_blocking=True)
        if autocast is not None:
            with autocast:
                logits = model(flat)
        else:
            logits = model(flat)
        p = average_view_scores(logits, v)
        probs.append(p.cpu())
        labels.append(label)
        indices.append(index)
        skipped += [s for joined in bad for s in joined.split("\n") if s]
    num_classes = getattr(model, "num_classes", None) or (probs[0].shape[1] if probs else 0)
    local = (
        torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        torch.cat(probs) if probs else torch.zeros(0, num_classes),
        torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        skipped,
    )
    parts = all_gather_objects(local)
    order = torch.cat([p[0] for p in parts])
    sort = order.argsort()
    return EvalResult(
        probs=torch.cat([p[1] for p in parts])[sort],
        labels=torch.cat([p[2] for p in parts])[sort],
        views=(dataset.num_clips, _crops_of(dataset)),
        class_names=dataset.class_names,
        skipped=sorted({s for p in parts for s in p[3]}),
    )


def _crops_of(dataset: VideoDataset) -> int:
    from .data.transforms import ThreeCrop

    steps = getattr(dataset.transform, "transforms", [])
    return 3 if any(isinstance(s, ThreeCrop) for s in steps) else 1


def published_numbers(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Published accuracy in a pretrained cfg, read defensively.

    Looks at ``cfg['reported']`` (a dict with ``top1``, ``top5``, ``views``/``test_views``,
    ``source``), then at flat keys ``reported_top1``, ``reported_top5``, ``test_views``,
    ``reported_source`` / ``origin_url``. Returns only what it found.
    """
    cfg = cfg or {}
    reported = cfg.get("reported") if isinstance(cfg.get("reported"), dict) else {}
    out: dict[str, Any] = {}
    for key in ("top1", "top5"):
        value = reported.get(key, cfg.get(f"reported_{key}"))
        if value is not None:
            out[key] = float(value)
    if not out:
        return {}
    views = reported.get("views") or reported.get("test_views") or cfg.get("test_views")
    if isinstance(views, (list, tuple)):
        views = "x".join(str(v) for v in views)
    if views:
        out["views"] = str(views)
    source = reported.get("source") or cfg.get("reported_source") or cfg.get("origin_url")
    if source:
        out["source"] = str(source)
    dataset = reported.get("dataset") or cfg.get("dataset")
    if dataset:
        out["dataset"] = str(dataset)
    return out


def _plot_confusion(confusion: torch.Tensor, names: Sequence[str] | None, path: Path, title: str) -> None:
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


def write_report(
    result: EvalResult,
    output: str | os.PathLike,
    *,
    model_name: str,
    pretrained_cfg: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``confusion.png`` into ``output``.

    The markdown table puts the published top-1/top-5 (from :func:`published_numbers`) beside the
    measured ones, with the difference, and says when the views differ from the published protocol.

    Returns:
        ``{'json': path, 'markdown': path, 'confusion': path}``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    published = published_numbers(pretrained_cfg)
    views = f"{result.views[0]}x{result.views[1]}"
    report = {"model": model_name, **(details or {}), **result.to_dict(), "published": published or None}
    if published:
        report["delta"] = {k: report[k] - published[k] for k in ("top1", "top5") if k in published}
    paths = {"json": output / "report.json", "markdown": output / "report.md", "confusion": output / "confusion.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = [
        f"# Evaluation of `{model_name}`",
        "",
        f"{result.num_videos} videos, {result.num_classes} classes, {views} views (clips x crops), softmax "
        "averaged over views.",
        "",
        "| | top-1 | top-5 | mean class acc. | views |",
        "| --- | --- | --- | --- | --- |",
        f"| measured | {fmt(result.top1)} | {fmt(result.top5)} | {fmt(result.mean_class_accuracy)} | {views} |",
    ]
    if published:
        lines.append(
            f"| published | {fmt(published.get('top1'))} | {fmt(published.get('top5'))} | | {published.get('views', '')} |"
        )
        delta = report["delta"]
        lines.append(f"| difference | {fmt(delta.get('top1'))} | {fmt(delta.get('top5'))} | | |")
        notes = []
        if published.get("views") and published["views"].lower() != views:
            notes.append(f"the published numbers use {published['views']} views, this run {views}")
        if published.get("source"):
            notes.append(f"source: {published['source']}")
        if notes:
            lines += ["", "Note: " + "; ".join(notes) + "."]
    else:
        lines += ["", "No published numbers for this model (its pretrained cfg has none)."]
    if details:
        lines += ["", "| setting | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in details.items()]
    if result.skipped:
        lines += ["", f"{len(result.skipped)} unreadable video(s) were replaced by others: {', '.join(result.skipped[:10])}"]
    lines += ["", "![confusion matrix](confusion.png)", ""]
    paths["markdown"].write_text("\n".join(lines), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib font-cache chatter
        _plot_confusion(result.confusion, result.class_names, paths["confusion"], f"{model_name} ({views})")
    return paths

