"""The model an evaluation runs: from a zoo name or tag, an export, a weights file or a training checkpoint."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, TdnzooError
from ..models import create_model
from ..models.hub_loading import is_export_name
from ..models.registry import split_tag

__all__ = ["load_eval_model", "read_training_meta"]


def read_training_meta(path: str | os.PathLike) -> dict[str, Any]:
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
        model_name: ``arch``, ``arch.tag``, or an export (``local-dir:PATH``, ``hf-hub:ORG/NAME[@REV]``);
            optional with a tdnzoo training checkpoint (its own name is used).
        checkpoint: weights to load strictly: a tdnzoo training checkpoint (``last.pt``/``best.pt``),
            safetensors, or an official TDN/TSM release.
        num_segments: segments per clip (default: the checkpoint's, the tag's or the export's).
        pretrained: load the tag's published weights or the export's own; default: for a tag or an
            export, when there is no checkpoint.

    Raises:
        TdnzooError: no weights at all (neither a tag nor a checkpoint), or they do not fit.
    """
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    meta = read_training_meta(checkpoint) if checkpoint is not None else {}
    args = meta.get("args") or {}
    if model_name is None:
        model_name = meta.get("model_name")
        if model_name is None:
            raise TdnzooError("--model is required unless --checkpoint is a tdnzoo training checkpoint")
    # An export carries its weights and a tag names published ones (a dot in an export's path is no tag).
    has_weights = is_export_name(model_name) or split_tag(model_name)[1] is not None
    if pretrained is None:
        pretrained = has_weights and checkpoint is None
    if not pretrained and checkpoint is None:
        raise TdnzooError(
            f"no weights to evaluate for '{model_name}': give a pretrained tag (e.g. 'tdn_resnet50.sthv1_8f', "
            "see `tdnzoo list --pretrained`), an export ('local-dir:PATH' or 'hf-hub:ORG/NAME') or --checkpoint PATH"
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
