"""timm's model contract on a video model: what ``tdnzoo.VideoClassifier`` adds to the plain forward.

timm promises, for every CNN: ``num_features`` (channels of ``forward_features``) and
``head_hidden_size``, ``default_cfg`` / ``pretrained_cfg`` with ``first_conv``, ``classifier`` and
``pool_size``, ``feature_info``, ``forward_intermediates`` / ``prune_intermediate_layers``,
``features_only=True`` models, ``set_grad_checkpointing``, ``group_matcher`` (stage groups for
layer-wise learning-rate decay) and ``torch.fx`` tracing. :class:`VideoModelContract` gives them to the video classifier, delegating to the backbone, which
runs its own forward:

- every feature map is **per segment**, ``[B*T, C, h, w]`` for a clip ``[B, T*F, 3, H, W]``, as
  ``forward_features`` returns it (the segment mean is taken by the head only);
- module paths (``feature_info``, ``first_conv``, ``classifier``, group regexes) are those of the
  video model (``backbone.layer1``, ``short_term.*``);
- S-TDM's maps reach the backbone's :class:`~tdnzoo.models.fusion.DifferenceFusion` wrappers
  through one hand-over, :class:`~tdnzoo.models.fusion.FusionHandOver`, used by every entry point
  that runs the backbone (:meth:`VideoModelContract._run_backbone`).

The ahead-of-time path is ``torch.export.export(model, (clip,))`` (or ONNX, ``tdnzoo export``);
``torch.jit.script`` refuses with an error saying so (TorchScript is deprecated in this torch).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.layers import register_notrace_function
from torch import nn

from .fusion import DifferenceFusion, FusionHandOver

__all__ = [
    "VideoFeatures",
    "VideoModelContract",
    "check_clip",
    "prefix_group_matcher",
    "split_clip",
    "take_indices",
]


def _shape(x: torch.Tensor) -> str:
    """``x.shape`` written as a Python tuple."""
    return str(tuple(x.shape))


@register_notrace_function  # a leaf for timm's feature-extraction tracer too
def check_clip(
    x: torch.Tensor, num_frames: int, num_segments: int, frames_per_segment: int, in_chans: int, min_size: int,
    backbone_name: str,
) -> torch.Tensor:
    """``x`` itself when it is a clip ``[B, num_frames, in_chans, H, W]`` with ``H, W >= min_size``.

    Raises:
        ValueError: saying what was expected and what was received.
    """
    expected = f"[B, {num_frames}, {in_chans}, H, W] with H, W >= {min_size}"
    if x.dim() != 5:
        raise ValueError(f"expected a 5-D clip tensor {expected}, got shape {_shape(x)}")
    if x.shape[2] != in_chans:
        what = "3 (RGB) channels" if in_chans == 3 else f"{in_chans} channels"
        raise ValueError(f"expected {what} at dim 2: {expected}, got shape {_shape(x)}")
    if x.shape[1] != num_frames:
        raise ValueError(
            f"expected {num_frames} frames (num_segments={num_segments} x "
            f"frames_per_segment={frames_per_segment}): {expected}, got shape {_shape(x)}"
        )
    if x.shape[3] < min_size or x.shape[4] < min_size:
        raise ValueError(
            f"frames of {x.shape[3]}x{x.shape[4]} are too small for backbone '{backbone_name}' "
            f"(it needs at least {min_size}x{min_size}): {expected}, got shape {_shape(x)}"
        )
    return x


# torch.fx calls the check as an opaque leaf (it branches on the shape); see tdnzoo.layers.shift.
torch.fx.wrap("check_clip")


def split_clip(x: torch.Tensor, num_segments: int, frames_per_segment: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T*F, C, H, W]`` -> the frames of each segment ``[B*T, F*C, H, W]`` and its centre frame ``[B*T, C, H, W]``.

    Written without reading the shape, so that ``torch.fx`` traces it.
    """
    segments = x.unflatten(1, [num_segments, frames_per_segment]).flatten(0, 1)  # [B*T, F, C, H, W]
    return segments.flatten(1, 2), segments[:, frames_per_segment // 2]


def take_indices(num_features: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's rule for ``indices``: ``None`` all, an int the last n, a sequence those (negative from the end)."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        return list(range(num_features - indices, num_features))
    taken = [num_features + i if i < 0 else i for i in indices]
    if not taken or any(not 0 <= i < num_features for i in taken):
        raise ValueError(f"feature indices {list(indices)} out of range (0 to {num_features - 1})")
    return taken


def _prefix_regex(regex: str, prefix: str) -> str:
    # timm's matchers are applied with re.match, so a '^' only anchors an alternative at the start:
    # drop them (not '[^' or '\^') and anchor the whole alternation after the prefix.
    body = re.sub(r"(?<![\\\[])\^", "", regex)
    return rf"^{re.escape(prefix)}(?:{body})"


def prefix_group_matcher(matcher: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A timm ``group_matcher`` dict for a module now at ``prefix`` (``'backbone.'``).

    Values are regexes or lists of ``(regex, ordinal suffix)`` tuples, as in timm.
    """
    out: dict[str, Any] = {}
    for group, spec in matcher.items():
        if isinstance(spec, str):
            out[group] = _prefix_regex(spec, prefix)
        elif isinstance(spec, (list, tuple)):
            out[group] = [(_prefix_regex(regex, prefix), *rest) for regex, *rest in spec]
        else:
            out[group] = spec
    return out


def _weighted_path(root: nn.Module, path: str) -> str:
    """``path`` (a module of ``root``), followed into tdnzoo's wrappers down to the module holding the weight."""
    module = root.get_submodule(path)
    while not hasattr(module, "weight") and isinstance(getattr(module, "inner", None), nn.Module):
        module, path = module.inner, f"{path}.inner"
    return path


def _as_tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


class VideoModelContract:
    """The timm model contract for :class:`tdnzoo.VideoClassifier` (a mixin: it needs ``backbone``,
    ``short_term``, ``fusion_points``, ``num_segments``, ``frames_per_segment`` and ``_check_input``).

    Attributes set by :meth:`_init_contract`:
        num_features: channels of ``forward_features`` (timm's meaning; MobileNetV3: 576).
        head_hidden_size: width of ``forward_head(x, pre_logits=True)`` (MobileNetV3: 1024).
        feature_info: timm's list of ``{'num_chs', 'reduction', 'module', ...}`` of the stages,
            with module paths in this model; maps are per segment, ``[B*T, C, h, w]``.
        in_chans: channels per frame (3; TSN and TSM may be built with others).
        grad_checkpointing: whether the backbone recomputes activations in the backward pass.
    """

    def _init_contract(self) -> None:
        backbone = self.backbone
        self.num_features = int(backbone.num_features)
        self.head_hidden_size = int(getattr(backbone, "head_hidden_size", None) or self.num_features)
        self.in_chans = 3
        self.grad_checkpointing = False
        self.fusion_handover = FusionHandOver() if self.short_term is not None else None  # see _run_backbone
        self.feature_info = [
            {**info, "module": f"backbone.{info['module']}" if info.get("module") else "backbone", "per_segment": True}
            for info in copy.deepcopy(list(getattr(backbone, "feature_info", None) or []))
        ]
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        contract: dict[str, Any] = {}
        try:
            first = tuple(f"backbone.{_weighted_path(backbone, p)}" for p in _as_tuple(cfg.get("first_conv")))
            if first:
                contract["first_conv"] = first[0] if len(first) == 1 else first
        except AttributeError:  # a cfg naming a module the backbone lacks
            pass
        if getattr(backbone, "num_classes", 0):
            try:
                head = tuple(f"backbone.{_weighted_path(backbone, p)}" for p in _as_tuple(cfg.get("classifier")))
                if head:
                    contract["classifier"] = head[0] if len(head) == 1 else head
            except AttributeError:
                pass
        reduction = max((int(f["reduction"]) for f in self.feature_info), default=0)
        size = tuple(self.pretrained_cfg.get("input_size", (3, 224, 224)))[-2:]
        if reduction:
            contract["pool_size"] = tuple(-(-s // reduction) for s in size)
        contract["min_input_size"] = (3, self.min_size, self.min_size)
        for key, value in contract.items():
            self.pretrained_cfg.setdefault(key, value)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for :attr:`pretrained_cfg` (the same dict)."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    # -- the S-TDM hand-over ----------------------------------------------------------------
    def _fusion_modules(self) -> list[nn.Module]:
        return [self.backbone.get_submodule(path) for path in self.fusion_points]

    def _run_backbone(self, run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
        """``run`` (a backbone method) on the per-segment frames of clip ``x``, S-TDM's maps handed over.

        Every entry point that runs the backbone on a clip (``forward_features``,
        ``forward_intermediates``) comes here: the RGB stream sees each segment's centre frame
        (official x3), and :class:`~tdnzoo.models.fusion.FusionHandOver` gives the maps to the fusion
        wrappers for this call only.
        """
        x = self._check_input(x)
        if self.short_term is None:
            return run(x.flatten(0, 1))
        if self.grad_checkpointing and torch.is_grad_enabled() and _reentrant_checkpointing():
            raise RuntimeError(
                "S-TDM cannot use timm's reentrant gradient checkpointing (timm.layers.set_reentrant_ckpt(True)): "
                "the S-TDM maps the checkpointed stages fuse are not their inputs, so a reentrant backward "
                "would run through the difference stream twice. Use timm's default, non-reentrant checkpointing."
            )
        frames, centre = split_clip(x, self.num_segments, self.frames_per_segment)
        maps = self.short_term(frames)
        return self.fusion_handover.run(run, centre, maps, self._fusion_modules(),
                                        again_in_backward=self.grad_checkpointing and torch.is_grad_enabled())

    # -- timm contract: features ------------------------------------------------------------
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        **kwargs: Any,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The backbone's ``forward_intermediates`` on a clip: per-segment maps ``[B*T, C, h, w]``.

        Args:
            x: clip ``[B, T, 3, H, W]``.
            indices: stages to return (indices into :attr:`feature_info`): ``None`` all, an int the
                last n, a list those.
            norm, stop_early, output_fmt, **kwargs: passed to the backbone's method.
            intermediates_only: return only the list of maps.

        Returns:
            The list of maps, or ``(forward_features output, list of maps)``.
        """
        if not hasattr(self.backbone, "forward_intermediates"):
            raise NotImplementedError(f"backbone '{self.backbone_name}' has no forward_intermediates in this timm")

        def run(frames: torch.Tensor) -> Any:
            return self.backbone.forward_intermediates(
                frames, indices=indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
                intermediates_only=intermediates_only, **kwargs,
            )

        return self._run_backbone(run, x)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True, **kwargs: Any
    ) -> list[int]:
        """Drop the backbone's layers after the last of ``indices`` (and the head); returns the kept indices.

        TDN keeps only the fusions whose wrapper survived; the S-TDM copy of a pruned first stage goes too.
        """
        kept = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head, **kwargs)
        self.num_classes = int(getattr(self.backbone, "num_classes", 0) or 0)
        alive = []
        for path in self.fusion_points:
            try:
                module = self.backbone.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(module, DifferenceFusion):
                alive.append(path)
        if self.short_term is not None and len(alive) < 2 and len(self.fusion_points) >= 2:
            self.short_term.stage = nn.Identity()
        self.fusion_points = tuple(alive)
        return kept

    # -- timm contract: training ------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's activations in the backward pass (its own checkpointing, per stage)."""
        self.backbone.set_grad_checkpointing(enable)
        self.grad_checkpointing = bool(enable)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The backbone's parameter groups (stem, stages or blocks) under ``backbone.``; TDN's S-TDM joins the stem.

        timm's ``param_groups_layer_decay`` (``create_optimizer_v2(model, layer_decay=...)``) uses it.
        """
        matcher = prefix_group_matcher(self.backbone.group_matcher(coarse=coarse), "backbone.")
        if self.short_term is not None:
            stem = "stem" if "stem" in matcher else next(iter(matcher))
            spec = matcher[stem]
            if isinstance(spec, str):
                matcher[stem] = rf"{spec}|^short_term\."
            else:
                matcher[stem] = [*spec, (r"^short_term\.", None)]
        return matcher

    def no_weight_decay(self) -> set[str]:
        """The backbone's parameters exempt from weight decay (timm's hook), under ``backbone.``."""
        names = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else set()
        return {f"backbone.{n}" for n in names}

    # -- ahead of time: torch.export, not TorchScript ------------------------------------------
    def __prepare_scriptable__(self) -> nn.Module:
        """Called by ``torch.jit.script``: refuses, naming the supported ahead-of-time paths."""
        raise RuntimeError(
            f"torch.jit.script does not support tdnzoo video models ({type(self).__name__} "
            f"'{self.pretrained_cfg.get('architecture', self.backbone_name)}'): TorchScript is deprecated in torch "
            "and cannot script the temporal wrappers' pass-through of the backbone's arguments. Use "
            "torch.export.export(model, (clip,)) for an ahead-of-time program, or ONNX "
            "(tdnzoo.export.export_onnx / `tdnzoo export`)."
        )


def _reentrant_checkpointing() -> bool:
    from timm import layers

    return bool(getattr(layers, "use_reentrant_ckpt", lambda: False)())


class VideoFeatures(nn.Module):
    """``create_model(..., features_only=True)``: a video model returning the maps of some stages.

    As timm's ``FeatureGetterNet``: the model, pruned after the last stage taken (and without its
    head), under ``model``; ``forward`` returns ``model.forward_intermediates(x, out_indices,
    intermediates_only=True)``, a list of **per-segment** maps ``[B*T, C, h, w]`` for a clip
    ``[B, T, 3, H, W]``.

    Attributes:
        feature_info: timm's ``FeatureInfo`` of the stages returned (``channels()``, ``reduction()``,
            ``module_name()``).
        out_indices: indices into the full model's ``feature_info``.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None, norm: bool = False,
                 output_fmt: str = "NCHW") -> None:
        from timm.models import FeatureInfo

        super().__init__()
        taken = take_indices(len(model.feature_info), out_indices)
        model.prune_intermediate_layers(taken, prune_norm=not norm, prune_head=True)
        self.model = model
        self.out_indices = tuple(taken)
        self.norm = norm
        self.output_fmt = output_fmt
        self.feature_info = FeatureInfo(copy.deepcopy(model.feature_info), self.out_indices)
        self.pretrained_cfg = model.pretrained_cfg
        self.num_segments = model.num_segments
        self.frames_per_segment = model.frames_per_segment

    @property
    def num_frames(self) -> int:
        return self.model.num_frames

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), norm=self.norm,
                                                output_fmt=self.output_fmt, intermediates_only=True)
