"""The builder: one path from an architecture and its pretrained cfg to a model with its weights.

:func:`tdnzoo.create_model` resolves a name (``arch[.tag]``, ``hf-hub:``, ``local-dir:``) into an
architecture, model arguments and a pretrained cfg, and hands them to :func:`build_model_with_cfg`
(timm's ``_builder.build_model_with_cfg``), which builds the model, records the cfg, loads the
pretrained weights (:func:`load_pretrained`, the file found by :mod:`tdnzoo.hub`) and resets the
head when another class count is asked for.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import os
from typing import Any

from torch import nn

from ..errors import CheckpointError, CheckpointMismatchError
from .checkpoint import load_checkpoint, read_state_dict
from .contract import VideoFeatures
from .description import ModelDescription, read_description
from .hub_loading import pretrained_weights_file
from .methods import BLOCK_TABLE, parse_method
from .official import convert_official
from .video import VideoClassifier, temporalize

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "adapt_in_chans",
    "apply_description",
    "apply_pretrained_cfg",
    "build_model_with_cfg",
    "load_pretrained",
    "reset_pretrained_head",
    "split_backbone_kwargs",
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


def apply_description(model: nn.Module, description: ModelDescription | None) -> None:
    """Record what the loaded weights were trained with (:mod:`.description`) in ``model.pretrained_cfg``:
    class names (for this head only), input size, mean/std and test views; the tag's resize for
    its own size goes when the size changes."""
    if description is None:
        return
    entries = description.cfg_entries()
    if "label_names" in entries and len(entries["label_names"]) != model.num_classes:
        del entries["label_names"]
    if "input_size" in entries and tuple(entries["input_size"]) != tuple(model.pretrained_cfg.get("input_size", ())):
        model.pretrained_cfg.pop("test_resize", None)
        model.pretrained_cfg.pop("test_crop_size", None)
    model.pretrained_cfg.update(entries)


def reset_pretrained_head(model: nn.Module, name: str, trained: int, requested: int,
                          global_pool: str | None = None) -> None:
    """Keep the backbone, replace a ``trained``-class head by a fresh ``requested``-class one, and say so."""
    _log.warning(
        "%s: pretrained head has %d classes, num_classes=%d requested: keeping the backbone, resetting the classifier",
        name, trained, requested,
    )
    model.reset_classifier(requested, *(() if global_pool is None else (global_pool,)))
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


# Builder keywords of timm's create_model that are not the backbone's: the layer config.
_LAYER_CONFIG = ("scriptable", "exportable", "no_jit")
_METHOD_OPTIONS = frozenset(inspect.signature(temporalize).parameters) - {"backbone", "method", "num_segments"}


def split_backbone_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` of ``create_model`` as (method options for :func:`temporalize`, keywords for timm's backbone).

    As timm's builder passes what it does not use itself to the model class, keywords that are not
    method options (``drop_path_rate``, ``global_pool``, ``in_chans``, ``act_layer``, ...) go to
    ``timm.create_model``, merged over ``backbone_kwargs``.
    """
    options = {k: v for k, v in kwargs.items() if k in _METHOD_OPTIONS}
    # Keywords of registered blocks switch them, as the built-in blocks' keywords do.
    registered = {k: kwargs[k] for k in kwargs if k in BLOCK_TABLE and k not in _METHOD_OPTIONS}
    if registered:
        options["blocks"] = {**(options.get("blocks") or {}), **registered}
    taken = _METHOD_OPTIONS | set(registered)
    timm_kwargs = {**(options.pop("backbone_kwargs", None) or {}), **{k: v for k, v in kwargs.items() if k not in taken}}
    return options, timm_kwargs


def adapt_in_chans(model: VideoClassifier, in_chans: int) -> None:
    """Give the first conv ``in_chans`` inputs, its weights adapted as timm adapts pretrained ones (TSN, TSM).

    The backbone is analysed and built on RGB; ``adapt_input_conv`` then sums (1 channel) or repeats
    and rescales (more channels) the RGB filters.

    Raises:
        ValueError: for TDN, whose short-term stream is defined on differences of RGB frames.
    """
    if in_chans == 3:
        return
    if model.short_term is not None:
        raise ValueError(
            f"TDN takes RGB frames (in_chans=3), got in_chans={in_chans}: its short-term difference stream is "
            "defined on differences of RGB frames. TSN and TSM take other channel counts."
        )
    from timm.models import adapt_input_conv

    first = model.pretrained_cfg.get("first_conv")
    paths = (first,) if isinstance(first, str) else tuple(first or ())
    if not paths:
        raise ValueError(f"in_chans={in_chans}: backbone '{model.backbone_name}' names no first conv to adapt")
    for path in paths:
        conv = model.get_submodule(path)
        conv.weight = nn.Parameter(adapt_input_conv(in_chans, conv.weight.detach()))
        conv.in_channels = in_chans
    model.in_chans = in_chans
    size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    model.pretrained_cfg["input_size"] = (in_chans, *size[1:])
    if "min_input_size" in model.pretrained_cfg:
        model.pretrained_cfg["min_input_size"] = (in_chans, *tuple(model.pretrained_cfg["min_input_size"])[1:])


def _jsonable(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


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
    features_only: bool = False,
    out_indices: int | tuple[int, ...] | list[int] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> VideoClassifier | VideoFeatures:
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
        features_only: return a :class:`~tdnzoo.models.contract.VideoFeatures` giving the
            per-segment maps of the stages ``out_indices`` (after the weights are loaded).
        out_indices: stages for ``features_only`` (indices into ``feature_info``; default all).
        pretrained_cfg_overlay: entries replacing those of the pretrained cfg (as timm's).
        **kwargs: method options for :func:`temporalize`; the others (``drop_path_rate``,
            ``global_pool``, ``in_chans``, ...) go to timm's backbone (:func:`split_backbone_kwargs`);
            ``scriptable``, ``exportable``, ``no_jit`` set timm's layer config for the build.
    """
    if pretrained_cfg_overlay:
        cfg = {**cfg, **pretrained_cfg_overlay}
    # A composition's name (``tsn+stdm``) is its preset and keywords; keywords given explicitly win.
    method, named = parse_method(method)
    kwargs = {**named, **kwargs}
    layer_config = {k: kwargs.pop(k) for k in _LAYER_CONFIG if k in kwargs}
    options, timm_kwargs = split_backbone_kwargs(kwargs)
    in_chans = int(timm_kwargs.pop("in_chans", 3))
    # What a tdnzoo checkpoint records (classes, names, segments, size, ...) describes the model it
    # builds, over the tag's cfg: they are the weights loaded last.
    described = read_description(checkpoint_path) if checkpoint_path is not None else None
    if num_segments is None:
        num_segments = int((described and described.num_segments) or cfg.get("num_segments") or DEFAULT_NUM_SEGMENTS)
    trained = int(cfg["num_classes"]) if cfg.get("num_classes") else None
    if num_classes is None:
        if pretrained and trained:
            num_classes = trained
        elif checkpoint_path is not None:
            num_classes = (described.num_classes or classes_in_checkpoint(checkpoint_path) or trained
                           or DEFAULT_NUM_CLASSES)
        else:
            num_classes = trained or DEFAULT_NUM_CLASSES
    # Build with the weights' head first; a different num_classes resets it explicitly below.
    build_classes = trained if pretrained and trained else num_classes
    with _layer_config(layer_config):
        try:
            model = temporalize(backbone, method, num_segments, num_classes=build_classes,
                                backbone_kwargs=timm_kwargs or None, **options)
        except TypeError as exc:
            if not timm_kwargs:
                raise
            close = [c for k in timm_kwargs for c in difflib.get_close_matches(k, _METHOD_OPTIONS, n=1)]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise TypeError(
                f"{name}: keywords {', '.join(sorted(timm_kwargs))} went to timm's '{backbone}' (they are not tdnzoo "
                f"method options), which does not take them all: {exc}.{hint}"
            ) from exc
    if in_chans != 3 and model.short_term is not None:
        adapt_in_chans(model, in_chans)  # raises: S-TDM is RGB only, before anything is loaded
    recorded = {k: v for k, v in timm_kwargs.items() if _jsonable(v)}
    if recorded:
        model.model_args["backbone_kwargs"] = recorded
    if cfg:
        apply_pretrained_cfg(model, cfg)
    if pretrained:
        load_pretrained(model, cfg)
        if num_classes != build_classes:
            reset_pretrained_head(model, name, build_classes, num_classes, timm_kwargs.get("global_pool"))
    if in_chans != 3:
        adapt_in_chans(model, in_chans)  # after the RGB weights, as timm adapts pretrained ones
        model.model_args["in_chans"] = in_chans
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
        apply_description(model, described)
    if features_only:
        return VideoFeatures(model, out_indices)
    return model


@contextlib.contextmanager
def _layer_config(config: dict[str, Any]):
    if not config:
        yield
        return
    from timm.layers import set_layer_config

    with set_layer_config(**config):
        yield
