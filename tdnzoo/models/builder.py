"""The builder: one path from an architecture and its pretrained cfg to a model with its weights.

:func:`tdnzoo.create_model` resolves a name (``arch[.tag]``, ``hf-hub:``, ``local-dir:``) into an
architecture, model arguments and a pretrained cfg, and hands them to :func:`build_model_with_cfg`
(timm's ``_builder.build_model_with_cfg``), which builds the model, records the cfg, loads the
pretrained weights (:func:`load_pretrained`, the file found by :mod:`tdnzoo.hub`) and resets the
head when another class count is asked for.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from ..errors import CheckpointError, CheckpointMismatchError
from ..hub.loading import pretrained_weights_file
from .checkpoint import load_checkpoint, read_state_dict
from .official import convert_official
from .video import VideoClassifier, temporalize

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "apply_pretrained_cfg",
    "build_model_with_cfg",
    "load_pretrained",
    "reset_pretrained_head",
]

_log = logging.getLogger(__name__)
DEFAULT_NUM_CLASSES = 400  # Kinetics-400, the usual video pre-training set
DEFAULT_NUM_SEGMENTS = 8
# Entries of a pretrained cfg that belong to the trained head: dropped with it.
_HEAD_KEYS = ("label_names", "dataset", "dataset_name", "hf_dataset", "top1", "top5", "metrics_source",
              "metrics_source_url", "sha256")


def apply_pretrained_cfg(model: nn.Module, cfg: dict[str, Any]) -> None:
    """Merge a tag's (or an export's) metadata into ``model.pretrained_cfg``, keeping the entries
    that describe the built model (segments, classes) true to it."""
    model.pretrained_cfg.update(cfg)
    model.pretrained_cfg["num_segments"] = model.num_segments
    model.pretrained_cfg["num_classes"] = model.num_classes
    labels = model.pretrained_cfg.get("label_names")
    if labels is not None and len(labels) != model.num_classes:
        del model.pretrained_cfg["label_names"]  # names of another head


def reset_pretrained_head(model: nn.Module, name: str, trained: int, requested: int) -> None:
    """Keep the backbone, replace a ``trained``-class head by a fresh ``requested``-class one, and say so."""
    _log.warning(
        "%s: pretrained head has %d classes, num_classes=%d requested: keeping the backbone, resetting the classifier",
        name, trained, requested,
    )
    model.reset_classifier(requested)
    # Names, dataset and reported accuracy belong to the dropped head; keep where the backbone came from.
    for key in _HEAD_KEYS:
        model.pretrained_cfg.pop(key, None)
    model.pretrained_cfg["finetuned_from"] = name


def load_pretrained(model: nn.Module, cfg: dict[str, Any]) -> None:
    """Load the weights of a tag or an export into ``model`` (built with their classes), strictly.

    :func:`tdnzoo.hub.pretrained_weights_file` finds the file (through the Hub cache); its sha256
    is checked when recorded.

    Raises:
        HubFileNotFoundError: the weights are neither on the Hub nor cached.
        CheckpointError: a damaged file or a hash mismatch, naming the source and what to do.
        CheckpointMismatchError: the weights do not fit the model (keys listed).
    """
    weights = pretrained_weights_file(cfg)
    try:
        load_checkpoint(model, weights.path, sha256=weights.sha256)
    except CheckpointMismatchError:
        raise  # lists the keys; the file itself is fine
    except CheckpointError as exc:
        raise CheckpointError(f"{weights.source}: {str(exc).rstrip('.')}. {weights.fix}") from exc


def classes_in_checkpoint(path: str | os.PathLike) -> int | None:
    """Rows of the classifier in a checkpoint, to default ``num_classes`` from it."""
    state_dict, _ = read_state_dict(path)
    state_dict, _ = convert_official(state_dict)
    weights = [v for k, v in state_dict.items() if k.endswith(("fc.weight", "classifier.weight")) and v.dim() == 2]
    return int(weights[-1].shape[0]) if weights else None


def build_model_with_cfg(
    name: str,
    method: str,
    backbone: str,
    cfg: dict[str, Any],
    *,
    pretrained: bool = False,
    num_classes: int | None = None,
    num_segments: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> VideoClassifier:
    """Build ``method`` on ``backbone`` as ``cfg`` describes it, then load weights.

    Args:
        name: the name asked for, for messages and ``finetuned_from``.
        method, backbone: from the parsed architecture name.
        cfg: the tag's or export's pretrained cfg (``{}`` for a bare architecture); its
            ``num_classes`` / ``num_segments`` are those the weights were trained with.
        pretrained: load the cfg's weights (:func:`load_pretrained`); with another ``num_classes``
            the backbone is kept and the head reset, with a log line.
        num_classes: classifier outputs. Default: the cfg's, else the checkpoint's, else 400.
        num_segments: segments per clip. Default: the cfg's, else 8.
        checkpoint_path: weights to load strictly after everything else.
        **kwargs: method options for :func:`temporalize`.
    """
    if num_segments is None:
        num_segments = int(cfg.get("num_segments") or DEFAULT_NUM_SEGMENTS)
    trained = int(cfg["num_classes"]) if cfg.get("num_classes") else None
    if num_classes is None:
        if pretrained and trained:
            num_classes = trained
        elif checkpoint_path is not None:
            num_classes = classes_in_checkpoint(checkpoint_path) or trained or DEFAULT_NUM_CLASSES
        else:
            num_classes = trained or DEFAULT_NUM_CLASSES
    # Build with the weights' head first; a different num_classes resets it explicitly below.
    build_classes = trained if pretrained and trained else num_classes
    model = temporalize(backbone, method, num_segments, num_classes=build_classes, **kwargs)
    if cfg:
        apply_pretrained_cfg(model, cfg)
    if pretrained:
        load_pretrained(model, cfg)
        if num_classes != build_classes:
            reset_pretrained_head(model, name, build_classes, num_classes)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model
