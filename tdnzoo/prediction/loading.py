"""The model and the class names a prediction uses."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data.datasets import load_label_names
from ..data.errors import DataError
from ..eval.model import load_described_model, read_training_meta
from ..models.checkpoint import load_checkpoint

__all__ = ["class_names_of", "default_device", "load_predict_model"]

_log = logging.getLogger(__name__)


def load_predict_model(
    model: str | nn.Module | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_segments: int | None = None,
    input_size: int | None = None,
    views: str | None = None,
    notes: list[str] | None = None,
) -> tuple[nn.Module, str]:
    """A model in eval mode and a printable name for it: a module as given, or loaded as ``tdnzoo eval`` does.

    The class names, segments, input size, mean/std and test views are those the weights record
    (:func:`tdnzoo.eval.load_described_model`); explicit values replace them.

    Args:
        model: a module, ``NAME[.TAG]`` (a tag brings its published weights) or an export
            (``local-dir:PATH``, ``hf-hub:ORG/NAME``, with its weights); optional when ``checkpoint``
            is a tdnzoo training checkpoint, which records its model.
        checkpoint: weights: a training checkpoint, safetensors, or an official release.
        num_segments, input_size, views: explicit values (default: the recorded ones).
        notes: a list to receive one line per recorded value an explicit one replaced.

    Raises:
        TdnzooError: no weights (an architecture without tag or checkpoint), or weights that do not fit.
    """
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        return model.eval(), _cfg_name(model)
    meta = read_training_meta(checkpoint) if checkpoint is not None else {}
    loaded, replaced = load_described_model(model, checkpoint=checkpoint, num_segments=num_segments,
                                            input_size=input_size, views=views)
    if notes is not None:
        notes.extend(replaced)
    return loaded, str(model or meta.get("model_name") or _cfg_name(loaded))


def _cfg_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = str(cfg.get("architecture") or type(model).__name__)
    return f"{arch}.{cfg['tag']}" if cfg.get("tag") else arch


def class_names_of(model: nn.Module, labels: str | os.PathLike | Sequence[str] | None = None) -> list[str]:
    """Names of the model's classes, in index order.

    ``labels`` (a list, a file with one name per line, or a packaged list such as ``kinetics400``)
    wins; then the cfg's ``label_names`` (a tag's, or a training checkpoint's class names); else
    ``class_<i>``.

    Raises:
        DataError: ``labels`` has a different count than the model's classes, or cannot be read.
    """
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if labels is not None:
        names = list(labels) if isinstance(labels, (list, tuple)) else load_label_names(str(labels))
        if num_classes and len(names) != num_classes:
            raise DataError(
                f"{len(names)} label names given but the model has {num_classes} classes; "
                "pass a label file with one name per class, in the model's class order"
            )
        return [str(n) for n in names]
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names") or cfg.get("class_names")
    if names and (not num_classes or len(names) == num_classes):
        return [str(n) for n in names]
    if names:
        _log.warning("the model's %d label names do not match its %d classes: using class_<i>", len(names), num_classes)
    return [f"class_{i}" for i in range(num_classes)]


def default_device(device: str | torch.device | None) -> torch.device:
    """``device``, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
