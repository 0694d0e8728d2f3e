"""``create_model``: the one entry point from a name to a ready model."""
from __future__ import annotations

import logging
import os
from typing import Any

from ..checkpoint import load_checkpoint, read_state_dict
from ..official import convert_official
from .registry import parse_model_name
from .video import VideoClassifier, temporalize

__all__ = ["create_model"]

_log = logging.getLogger(__name__)
DEFAULT_NUM_CLASSES = 400  # Kinetics-400, the usual video pre-training set


def _classes_in_checkpoint(path: str | os.PathLike) -> int | None:
    """Rows of the classifier in a checkpoint, to default ``num_classes`` from it."""
    state_dict, _ = read_state_dict(path)
    state_dict, _ = convert_official(state_dict)
    weights = [v for k, v in state_dict.items() if k.endswith(("fc.weight", "classifier.weight")) and v.dim() == 2]
    return int(weights[-1].shape[0]) if weights else None


def create_model(
    model_name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    num_segments: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> VideoClassifier:
    """Create a TSN, TSM or TDN model by name.

    Names are ``<method>_<timm backbone>[.<tag>]``: ``tdn_resnet50``, ``tsm_convnext_tiny``,
    ``tdn_resnet50.sthv1_8f``; or ``hf-hub:ORG/REPO[@REV]`` / ``local-dir:PATH`` for a tdnzoo
    export (with ``pretrained=True``).

    Args:
        model_name: the model name.
        pretrained: load the pretrained weights of the tag (downloaded through the Hub cache).
        num_classes: classifier outputs. Defaults to the tag's, else the checkpoint's, else 400.
            With ``pretrained=True`` and a different count the head is reset, with a log line.
        num_segments: segments per clip; defaults to the tag's, else 8.
        checkpoint_path: weights to load strictly: tdnzoo safetensors, a tdnzoo training
            checkpoint, or an official TDN / TSM release (converted on the fly).
        **kwargs: method options for :func:`tdnzoo.temporalize` (``fusion_weights``,
            ``shift_div``, ``long_term_stages``, ``drop_rate``, ``backbone_kwargs``, ...).

    Example:
        >>> model = create_model('tdn_resnet50', num_classes=174, num_segments=8)
        >>> model.num_frames
        40
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if model_name.startswith(("hf-hub:", "local-dir:")):
        from ..hub import create_from_export

        return create_from_export(
            model_name, pretrained=pretrained, num_classes=num_classes, num_segments=num_segments,
            checkpoint_path=checkpoint_path, **kwargs,
        )

    method, backbone, tag = parse_model_name(model_name)
    cfg: dict[str, Any] = {}
    if tag is not None or pretrained:
        from ..pretrained import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
    if num_segments is None:
        num_segments = int(cfg.get("num_segments", 8))
    trained_classes = cfg.get("num_classes")
    if num_classes is None:
        if pretrained and trained_classes:
            num_classes = int(trained_classes)
        elif checkpoint_path is not None:
            num_classes = _classes_in_checkpoint(checkpoint_path) or DEFAULT_NUM_CLASSES
        else:
            num_classes = int(trained_classes or DEFAULT_NUM_CLASSES)
    # Build with the checkpoint's head first; a different num_classes resets it explicitly below.
    build_classes = int(trained_classes) if pretrained and trained_classes else num_classes
    model = temporalize(backbone, method, num_segments, num_classes=build_classes, **kwargs)
    if cfg:
        from ..pretrained import apply_pretrained_cfg

        apply_pretrained_cfg(model, cfg)

    if pretrained:
        from ..pretrained import load_pretrained, reset_pretrained_head

        load_pretrained(model, cfg)
        if num_classes != build_classes:
            reset_pretrained_head(model, model_name, build_classes, num_classes)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model
