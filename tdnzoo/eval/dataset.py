"""The test-mode dataset of an evaluation, shaped for the model (segments, frames, input size, mean/std)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..data.datasets import VideoDataset, build_dataset
from ..data.transforms import eval_transform, parse_views

__all__ = ["build_eval_dataset"]


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
