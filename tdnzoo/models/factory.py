"""``create_model``: the one entry point from a name to a ready model (timm's ``_factory``).

It resolves the name into an architecture, model arguments and a pretrained cfg (a tag's from
:mod:`.pretrained`, an export's read by :mod:`tdnzoo.hub`) and leaves building and loading to
:func:`.builder.build_model_with_cfg`.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import CheckpointError
from .builder import build_model_with_cfg
from .contract import VideoFeatures
from .hub_loading import CONFIG_NAME, is_export_name, load_export_cfg
from .pretrained import get_pretrained_cfg
from .registry import parse_model_name
from .video import VideoClassifier

__all__ = ["create_model"]


def create_model(
    model_name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    num_segments: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> VideoClassifier | VideoFeatures:
    """Create a TSN, TSM or TDN model by name.

    Names are ``<method>_<timm backbone>[.<tag>]``: ``tdn_resnet50``, ``tsm_convnext_tiny``,
    ``tdn_resnet50.sthv1_8f``; or ``hf-hub:ORG/REPO[@REV]`` / ``local-dir:PATH`` for a tdnzoo
    export (its weights with ``pretrained=True``).

    Args:
        model_name: the model name.
        pretrained: load the pretrained weights of the tag or export (downloaded through the Hub cache).
        num_classes: classifier outputs. Defaults to the tag's, else the checkpoint's, else 400.
            With ``pretrained=True`` and a different count the head is reset, with a log line.
        num_segments: segments per clip; defaults to the tag's, else 8.
        checkpoint_path: weights to load strictly: tdnzoo safetensors, a tdnzoo training
            checkpoint, or an official TDN / TSM release (converted on the fly).
        **kwargs: method options for :func:`tdnzoo.temporalize` (``fusion_weights``,
            ``shift_div``, ``long_term_stages``, ``drop_rate``, ``backbone_kwargs``, ...); timm's
            builder keywords: ``features_only`` and ``out_indices`` (a
            :class:`~tdnzoo.models.contract.VideoFeatures` returning per-segment maps),
            ``pretrained_cfg_overlay``, ``scriptable`` / ``exportable`` / ``no_jit``; any other
            keyword goes to timm's backbone (``global_pool``, ``drop_path_rate``, ``in_chans`` for
            TSN and TSM, ...), as timm passes them to the model class.

    Example:
        >>> model = create_model('tdn_resnet50', num_classes=174, num_segments=8)
        >>> model.num_frames
        40
        >>> features = create_model('tsm_resnet50', features_only=True, out_indices=(2, 3, 4), num_segments=8)
        >>> [f.shape for f in features(torch.randn(1, 8, 3, 224, 224))]  # per segment: [B*T, C, h, w]
        [torch.Size([8, 512, 28, 28]), torch.Size([8, 1024, 14, 14]), torch.Size([8, 2048, 7, 7])]
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if is_export_name(model_name):
        arch, model_args, cfg = load_export_cfg(model_name)
        method, backbone, _ = parse_model_name(arch)
        try:
            return build_model_with_cfg(
                model_name, method, backbone, cfg, pretrained=pretrained, num_classes=num_classes,
                num_segments=num_segments, checkpoint_path=checkpoint_path, **{**model_args, **kwargs},
            )
        except TypeError as exc:
            raise CheckpointError(
                f"{model_name}: the model arguments in {CONFIG_NAME} ({', '.join(sorted(model_args))}) do not fit "
                f"this tdnzoo version: {exc}. Upgrade tdnzoo or re-export the model."
            ) from exc

    method, backbone, tag = parse_model_name(model_name)
    cfg = get_pretrained_cfg(model_name) if tag is not None or pretrained else {}
    return build_model_with_cfg(
        model_name, method, backbone, cfg, pretrained=pretrained, num_classes=num_classes,
        num_segments=num_segments, checkpoint_path=checkpoint_path, **kwargs,
    )
