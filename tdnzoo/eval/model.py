"""The model an evaluation runs: from a zoo name or tag, an export, a weights file or a training checkpoint."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, TdnzooError
from ..models import create_model
from ..models.builder import apply_description
from ..models.description import describe_weights, override
from ..models.hub_loading import is_export_name
from ..models.registry import split_tag

__all__ = ["load_described_model", "load_eval_model", "read_training_meta"]

_log = logging.getLogger(__name__)


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


def load_described_model(
    model_name: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_segments: int | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
    views: str | None = None,
    pretrained: bool | None = None,
    require_weights: bool = True,
    flags: Mapping[str, str] | None = None,
) -> tuple[nn.Module, list[str]]:
    """The model a command uses, described as its weights record, and one note per value a flag replaced.

    ``predict``, ``eval``, ``export onnx`` and ``save-pretrained`` all load through here: the class
    names, segments, frames per segment, input size, mean/std and test views come from the
    checkpoint, the export or the tag (:func:`tdnzoo.models.description.describe_weights`) and land
    in ``model.pretrained_cfg``, which the transforms, reports and exports read. An explicit value
    replaces the recorded one and adds a note such as ``'input size 224 (from --input-size; the
    checkpoint says 64)'``.

    Args:
        model_name: ``arch``, ``arch.tag``, or an export (``local-dir:PATH``, ``hf-hub:ORG/NAME[@REV]``);
            optional with a tdnzoo training checkpoint (its own name is used).
        checkpoint: weights to load strictly: a tdnzoo training checkpoint (``last.pt``/``best.pt``),
            safetensors, or an official TDN/TSM release.
        num_segments, num_classes, input_size, views: explicit values (``None``: the recorded ones).
        pretrained: load the tag's published weights or the export's own; default: for a tag or an
            export, when there is no checkpoint.
        require_weights: refuse an architecture without tag, export or checkpoint (random weights).
        flags: the flag each explicit value came from, for the notes (default ``--num-segments``, ...).

    Raises:
        TdnzooError: no weights at all (when required), or they do not fit.
    """
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    meta = read_training_meta(checkpoint) if checkpoint is not None else {}
    if model_name is None:
        model_name = meta.get("model_name")
        if model_name is None:
            raise TdnzooError("--model is required unless --checkpoint is a tdnzoo training checkpoint")
    # An export carries its weights and a tag names published ones (a dot in an export's path is no tag).
    has_weights = is_export_name(model_name) or split_tag(model_name)[1] is not None
    if pretrained is None:
        pretrained = has_weights and checkpoint is None
    if require_weights and not pretrained and checkpoint is None:
        raise TdnzooError(
            f"no weights to evaluate for '{model_name}': give a pretrained tag (e.g. 'tdn_resnet50.sthv1_8f', "
            "see `tdnzoo list --pretrained`), an export ('local-dir:PATH' or 'hf-hub:ORG/NAME') or --checkpoint PATH"
        )
    flags = {**_FLAGS, **(flags or {})}
    described, notes = override(
        describe_weights(model_name, checkpoint),
        **{key: (value, flags[key]) for key, value in (("num_segments", num_segments), ("num_classes", num_classes),
                                                       ("input_size", input_size), ("test_views", views))},
    )
    kwargs = dict((meta.get("args") or {}).get("model_kwargs") or {})
    model = create_model(
        model_name, pretrained=pretrained, num_segments=described.num_segments, checkpoint_path=checkpoint,
        num_classes=described.num_classes if (checkpoint is not None or num_classes is not None) else None, **kwargs,
    )
    apply_description(model, described)
    return model.eval(), notes


_FLAGS = {"num_segments": "--num-segments", "num_classes": "--num-classes", "input_size": "--input-size",
          "test_views": "--views"}


def load_eval_model(
    model_name: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_segments: int | None = None,
    pretrained: bool | None = None,
) -> nn.Module:
    """A model ready to evaluate, described as its weights record (see :func:`load_described_model`).

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
    model, notes = load_described_model(model_name, checkpoint=checkpoint, num_segments=num_segments,
                                        pretrained=pretrained)
    for note in notes:
        _log.info(note)
    return model
