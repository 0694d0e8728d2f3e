"""What a trained model is, read from wherever its weights are: one resolver for every command.

A :class:`ModelDescription` holds what a user must not have to repeat after training: the class
names, segments, frames per segment, input size, mean/std and test views. :func:`read_description`
reads it from a tdnzoo training checkpoint, a safetensors file written by tdnzoo, or an export
(``local-dir:PATH``, ``hf-hub:ORG/NAME``); :func:`describe_weights` adds a tag's published cfg.
``create_model(checkpoint_path=...)`` applies it to the model it builds (:meth:`cfg_entries`), and
``predict``, ``eval``, ``export onnx`` and ``save-pretrained`` read it the same way; a command-line
flag replaces a value with :func:`override`, which says so in one line.

This module reads files and configs only; it builds no model.

Example:
    >>> desc = read_description("runs/tdn/best.pt")
    >>> desc.class_names, desc.num_segments, desc.input_size
    (('jump', 'run', 'walk'), 2, 64)
    >>> desc, notes = override(desc, input_size=(224, "--input-size"))
    >>> notes
    ['input size 224 (from --input-size; the checkpoint says 64)']
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .hub_loading import is_export_name, read_export_config

__all__ = [
    "DESCRIPTION_KEY",
    "ModelDescription",
    "describe_model",
    "describe_weights",
    "override",
    "read_description",
]

# The key under which config.json, safetensors metadata, a training checkpoint and ONNX metadata hold it.
DESCRIPTION_KEY = "description"
TRAIN_FORMAT = "tdnzoo-train"  # as tdnzoo.train.state.FORMAT, which this rank may not import
# What each field is called in a one-line override message.
_LABELS = {
    "num_classes": "classes", "class_names": "class names", "num_segments": "segments",
    "frames_per_segment": "frames per segment", "input_size": "input size", "mean": "mean", "std": "std",
    "test_views": "test views",
}


@dataclass(frozen=True)
class ModelDescription:
    """The classes and clip settings of trained weights; ``None`` where the source does not say.

    Attributes:
        architecture: ``method_backbone`` the weights belong to.
        num_classes, class_names: the classifier's outputs and their names in index order.
        num_segments, frames_per_segment: the clip layout it was trained with.
        input_size: side of the square frames it was trained at.
        mean, std: the input normalisation.
        test_views: ``CLIPSxCROPS`` of its test protocol.
        source: where it was read from, for messages ("the checkpoint", "the export", ...).
    """

    architecture: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    num_segments: int | None = None
    frames_per_segment: int | None = None
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    test_views: str | None = None
    source: str = "the model"

    def __post_init__(self) -> None:
        names = self.class_names
        if names is not None and self.num_classes is not None and len(names) != self.num_classes:
            # Names of another head (or a class count given later): never show them for this one.
            object.__setattr__(self, "class_names", None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists for tuples), without ``source`` and without unknown fields."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "source"}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str) -> ModelDescription:
        """Read :meth:`to_dict`'s output back (unknown keys are ignored: a newer writer's)."""
        known = {f.name for f in fields(cls)} - {"source"}
        return _typed(cls, {k: v for k, v in values.items() if k in known}, source)

    def or_else(self, other: ModelDescription) -> ModelDescription:
        """This description, its unknown fields filled from ``other``."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}
        filled = {k: (v if v is not None else getattr(other, k)) for k, v in values.items()}
        return ModelDescription(**filled, source=self.source)

    def cfg_entries(self) -> dict[str, Any]:
        """The ``pretrained_cfg`` entries it sets on a model (what the transforms, exports and reports read)."""
        cfg: dict[str, Any] = {}
        if self.class_names is not None:
            cfg["label_names"] = tuple(self.class_names)
        if self.input_size is not None:
            cfg["input_size"] = (3, int(self.input_size), int(self.input_size))
        if self.mean is not None:
            cfg["mean"] = tuple(self.mean)
        if self.std is not None:
            cfg["std"] = tuple(self.std)
        if self.test_views is not None:
            clips, crops = (int(v) for v in self.test_views.split("x"))
            cfg.update(test_clips=clips, test_crops=crops)
        return cfg


def _typed(cls: type[ModelDescription], values: Mapping[str, Any], source: str) -> ModelDescription:
    def opt(key: str, kind: Any) -> Any:
        value = values.get(key)
        return None if value is None else kind(value)

    def floats(v: Sequence[Any]) -> tuple[float, ...]:
        return tuple(float(x) for x in v)

    views = values.get("test_views")
    if isinstance(views, (list, tuple)):
        views = f"{int(views[0])}x{int(views[1])}"
    return cls(
        architecture=opt("architecture", str), num_classes=opt("num_classes", int),
        class_names=opt("class_names", lambda v: tuple(str(n) for n in v)),
        num_segments=opt("num_segments", int), frames_per_segment=opt("frames_per_segment", int),
        input_size=opt("input_size", lambda v: int(v[-1]) if isinstance(v, (list, tuple)) else int(v)),
        mean=opt("mean", floats), std=opt("std", floats), test_views=str(views) if views else None, source=source,
    )


def _cfg_views(cfg: Mapping[str, Any]) -> str | None:
    if cfg.get("test_clips") or cfg.get("test_crops"):
        return f"{int(cfg.get('test_clips') or 1)}x{int(cfg.get('test_crops') or 1)}"
    return None


def _from_cfg(cfg: Mapping[str, Any], source: str, **extra: Any) -> ModelDescription:
    """A description from a pretrained cfg (a tag's, an export's or a model's)."""
    values = {
        "architecture": cfg.get("architecture"), "num_classes": cfg.get("num_classes"),
        "class_names": cfg.get("label_names"), "num_segments": cfg.get("num_segments"),
        "frames_per_segment": cfg.get("frames_per_segment"), "input_size": cfg.get("input_size"),
        "mean": cfg.get("mean"), "std": cfg.get("std"), "test_views": _cfg_views(cfg),
    }
    values.update({k: v for k, v in extra.items() if v is not None})
    return _typed(ModelDescription, values, source)


def describe_model(model: Any, source: str = "the model") -> ModelDescription:
    """The description a built model carries: its own shape (classes, segments) and its ``pretrained_cfg``."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return _from_cfg(cfg, source, num_classes=getattr(model, "num_classes", None),
                     num_segments=getattr(model, "num_segments", None),
                     frames_per_segment=getattr(model, "frames_per_segment", None))


def _training_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not ours to judge here: loading the weights reports unreadable files
        return None
    return obj if isinstance(obj, dict) and obj.get("format") == TRAIN_FORMAT else None


def _from_training_checkpoint(ckpt: Mapping[str, Any], source: str) -> ModelDescription:
    if isinstance(ckpt.get(DESCRIPTION_KEY), Mapping):
        return ModelDescription.from_dict(ckpt[DESCRIPTION_KEY], source)
    # Checkpoints written before the description was recorded: what their fields say.
    args, model_args = ckpt.get("args") or {}, ckpt.get("model_args") or {}
    return _typed(ModelDescription, {
        "architecture": ckpt.get("architecture"), "num_classes": ckpt.get("num_classes"),
        "class_names": ckpt.get("class_names") or None,
        "num_segments": model_args.get("num_segments") or args.get("num_segments"),
        "frames_per_segment": model_args.get("frames_per_segment"), "input_size": args.get("input_size"),
    }, source)


def _from_safetensors(path: Path, source: str) -> ModelDescription:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return ModelDescription(source=source)  # loading the weights reports the damage
    try:
        if DESCRIPTION_KEY in meta:
            return ModelDescription.from_dict(json.loads(meta[DESCRIPTION_KEY]), source)
        model_args = json.loads(meta.get("model_args") or "{}")
    except ValueError as exc:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({exc})") from exc
    return _typed(ModelDescription, {"architecture": meta.get("architecture"), **{
        k: model_args.get(k) for k in ("num_classes", "num_segments", "frames_per_segment")}}, source)


def _from_export(name: str) -> ModelDescription:
    config, _ = read_export_config(name)
    source = f"the export {name}"
    cfg = dict(config.get("pretrained_cfg") or {})
    legacy = _from_cfg(cfg, source, architecture=config.get("architecture"), num_classes=config.get("num_classes"),
                       class_names=config.get("label_names"), num_segments=config.get("num_segments"),
                       frames_per_segment=config.get("frames_per_segment"))
    if isinstance(config.get(DESCRIPTION_KEY), Mapping):
        return ModelDescription.from_dict(config[DESCRIPTION_KEY], source).or_else(legacy)
    return legacy


def read_description(source: str | os.PathLike) -> ModelDescription:
    """The description recorded with weights: a training checkpoint, a safetensors file or an export.

    Other files (an official release, a plain state dict) describe nothing: every field ``None``.

    Raises:
        HubFileNotFoundError, CheckpointError: an export without a readable ``config.json``.
    """
    if isinstance(source, str) and is_export_name(source):
        return _from_export(source)
    path = Path(source)
    label = f"the checkpoint {path.name}"
    if not path.is_file():
        return ModelDescription(source=label)
    if path.suffix == ".safetensors":
        return _from_safetensors(path, label)
    ckpt = _training_checkpoint(path)
    return _from_training_checkpoint(ckpt, label) if ckpt is not None else ModelDescription(source=label)


def describe_weights(model_name: str | None, checkpoint: str | os.PathLike | None = None) -> ModelDescription:
    """The description of the weights a command will load: the checkpoint's when given, else the
    export's (``local-dir:``, ``hf-hub:``), else the tag's published cfg; unknown fields of the
    checkpoint are filled from the name's."""
    from .pretrained import get_pretrained_cfg
    from .registry import split_tag

    named = ModelDescription(source="the model")
    if model_name and is_export_name(model_name):
        named = read_description(model_name)
    elif model_name and split_tag(model_name)[1] is not None:
        named = _from_cfg(get_pretrained_cfg(model_name), f"the tag {model_name}")
    if checkpoint is None:
        return named
    found = read_description(checkpoint)
    if named.num_classes is not None and found.num_classes is not None and named.num_classes != found.num_classes:
        named = replace(named, class_names=None)  # the tag's names are those of another head
    return found.or_else(replace(named, num_classes=found.num_classes or named.num_classes))


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return str(value)


def override(
    description: ModelDescription, **values: tuple[Any, str] | None
) -> tuple[ModelDescription, list[str]]:
    """Replace fields by explicit values, each given as ``(value, flag)`` (``None`` or a ``None`` value: keep).

    Returns the new description and one line per value that differs from the recorded one, such as
    ``'input size 224 (from --input-size; the checkpoint says 64)'``.
    """
    notes, changes = [], {}
    for key, given in values.items():
        if key not in _LABELS:
            raise TypeError(f"override() got an unknown field '{key}'")
        if given is None or given[0] is None:
            continue
        value, flag = given
        if isinstance(value, Sequence) and not isinstance(value, str):
            value = tuple(value)
        recorded = getattr(description, key)
        changes[key] = value
        if recorded is not None and recorded != value:
            notes.append(f"{_LABELS[key]} {_show(value)} (from {flag}; {description.source} says {_show(recorded)})")
    return replace(description, **changes), notes
