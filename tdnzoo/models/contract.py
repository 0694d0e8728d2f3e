"""timm's model contract on a video model: what ``tdnzoo.VideoClassifier`` adds to the plain forward.

timm promises, for every CNN: ``num_features`` (channels of ``forward_features``) and
``head_hidden_size``, ``default_cfg`` / ``pretrained_cfg`` with ``first_conv``, ``classifier`` and
``pool_size``, ``feature_info``, ``forward_intermediates`` / ``prune_intermediate_layers``,
``features_only=True`` models, ``set_grad_checkpointing``, ``group_matcher`` (stage groups for
layer-wise learning-rate decay), ``torch.fx`` tracing and ``torch.jit.script``.
:class:`VideoModelContract` gives them to the video classifier, delegating to the backbone, which
runs its own forward:

- every feature map is **per segment**, ``[B*T, C, h, w]`` for a clip ``[B, T*F, 3, H, W]``, as
  ``forward_features`` returns it (the segment mean is taken by the head only);
- module paths (``feature_info``, ``first_conv``, ``classifier``, group regexes) are those of the
  video model (``backbone.layer1``, ``short_term.*``);
- TDN's S-TDM maps reach the backbone's :class:`~tdnzoo.models.fusion.DifferenceFusion` wrappers
  through one hand-over, :meth:`VideoModelContract.difference_maps`, used by every entry point
  that runs the backbone; with gradient checkpointing the maps are handed over again when the
  backward pass recomputes a fusion.

TorchScript (deprecated in this torch) scripts a copy in which the wrappers take one tensor and the
hand-over goes through shared slots (:meth:`VideoModelContract.__prepare_scriptable__`).
"""
from __future__ import annotations

import contextlib
import copy
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import torch
from timm.layers import register_notrace_function, register_notrace_module
from torch import nn

from ..layers import fuse_difference
from .fusion import DifferenceFusion
from .insertion import TemporalInsert

__all__ = [
    "FusionHandOver",
    "VideoFeatures",
    "VideoModelContract",
    "check_clip",
    "prefix_group_matcher",
    "split_clip",
    "take_indices",
]


def _shape(x: torch.Tensor) -> str:
    """``x.shape`` written as a Python tuple, in code that TorchScript also compiles."""
    dims = [str(d) for d in x.shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


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


@register_notrace_module  # timm's tracer records it as a call: its effect is needed when the graph runs
class FusionHandOver(nn.Module):
    """The S-TDM hand-over as a node of a ``torch.fx`` graph (a TDN model's ``fusion_handover``).

    Tracing runs :meth:`VideoModelContract.difference_maps` on proxies, which puts the fusions
    that are traced through into the graph. timm's tracer keeps some backbone modules whole
    (``BatchNormAct2d`` and other notrace modules): a fusion wrapper inside one runs only when the
    graph runs, and reads its map then. So the traced forward also records two calls of this
    module: ``centre = fusion_handover(centre, *maps)`` sets the maps before the backbone, and
    ``out = fusion_handover(out)`` clears them after it. Each returns its first argument, so that the
    graph keeps it in place.
    """

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "points", [])  # the fusion wrappers, not registered as children (set when tracing)

    def forward(self, x: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
        for i, point in enumerate(self.points):
            point.difference = maps[i] if i < len(maps) else None
        return x


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

    # TorchScript compiles a module's properties unless told not to: default_cfg is a dict of anything.
    __jit_unused_properties__ = ["default_cfg"]

    def _init_contract(self) -> None:
        backbone = self.backbone
        self.num_features = int(backbone.num_features)
        self.head_hidden_size = int(getattr(backbone, "head_hidden_size", None) or self.num_features)
        self.in_chans = 3
        self.grad_checkpointing = False
        self.fusion_handover = FusionHandOver() if self.short_term is not None else None
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

    @contextlib.contextmanager
    def difference_maps(self, maps: Sequence[torch.Tensor]) -> Iterator[None]:
        """Hand TDN's S-TDM ``maps`` to the backbone's fusion wrappers for the block, and take them back.

        The one way the maps reach the backbone: ``forward_features``, ``forward_intermediates`` and
        anything else running the backbone on a clip go through it. The maps are cleared whatever
        happens, so that the backbone run on its own cannot fuse stale maps.
        """
        points = self._fusion_modules()
        for point, difference in zip(points, maps):
            point.difference = difference
        try:
            yield
        finally:
            for point in points:
                point.difference = None

    def _run_backbone(self, run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
        """``run`` (a backbone method) on the per-segment frames of clip ``x``, with TDN's S-TDM maps handed over."""
        x = self._check_input(x)
        if self.short_term is None:
            return run(x.flatten(0, 1))
        if self.grad_checkpointing and torch.is_grad_enabled() and _reentrant_checkpointing():
            raise RuntimeError(
                "TDN cannot use timm's reentrant gradient checkpointing (timm.layers.set_reentrant_ckpt(True)): "
                "the S-TDM maps the checkpointed stages fuse are not their inputs, so a reentrant backward "
                "would run through the difference stream twice. Use timm's default, non-reentrant checkpointing."
            )
        frames, centre = split_clip(x, self.num_segments, self.frames_per_segment)
        maps = self.short_term(frames)  # the RGB stream sees the centre frame (official x3)
        tracing = torch.fx._symbolic_trace.is_fx_symbolic_tracing()
        if tracing:  # the hand-over must also happen when the traced graph runs
            self.fusion_handover.points[:] = self._fusion_modules()
            centre = self.fusion_handover(centre, *maps)
        with self.difference_maps(maps):
            out = run(centre)
        if tracing:  # clear after the last backbone node: through the output, so that it stays in the graph
            if isinstance(out, tuple):  # forward_intermediates: (final map, maps)
                return (self.fusion_handover(out[0]), *out[1:])
            if isinstance(out, list):  # forward_intermediates(intermediates_only=True)
                return [*out[:-1], self.fusion_handover(out[-1])]
            return self.fusion_handover(out)
        if self.grad_checkpointing and torch.is_grad_enabled():
            self._hand_over_again_in_backward(out, maps)
        return out

    def _hand_over_again_in_backward(self, out: Any, maps: Sequence[torch.Tensor]) -> None:
        """With gradient checkpointing the backward pass re-runs fusion wrappers after the hand-over ended.

        The maps of this call are set again when the gradient reaches this call's outputs (before
        any of its checkpointed stages is recomputed: autograd finishes one clip's backbone before
        the next one's) and cleared when it reaches the first map (after all of them).
        """
        points = self._fusion_modules()
        maps = list(maps)  # held by the outputs' hooks: the graph itself need not keep them
        refs = [weakref.ref(m) for m in maps]  # the first map's hook must not hold it (a cycle)

        def put(grad: torch.Tensor) -> None:
            for point, difference in zip(points, maps):
                point.difference = difference

        def clear(grad: torch.Tensor) -> None:
            for point, ref in zip(points, refs):
                if point.difference is ref():
                    point.difference = None

        outputs = [out] if isinstance(out, torch.Tensor) else [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
        for t in outputs:
            if t.requires_grad:
                t.register_hook(put)
        if maps and maps[0].requires_grad:
            maps[0].register_hook(clear)

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

    # -- TorchScript ------------------------------------------------------------------------
    def __prepare_scriptable__(self) -> nn.Module:
        """A copy of the model that ``torch.jit.script`` compiles (called by it; the model is left as it is).

        In the copy, the temporal wrappers take one tensor (TorchScript has no ``*args``) and TDN's
        hand-over goes through :class:`_MapSlot` modules shared by the fusion wrappers and the
        model. Temporal modules on channels-last or token maps cannot be scripted: a ``RuntimeError``
        names them.
        """
        model = copy.deepcopy(self)
        with _quiet_jit():
            slots = [torch.jit.script(_MapSlot()) for _ in model.fusion_points]
        fusions = dict(zip(model.fusion_points, slots))
        wrapped = [(n, m) for n, m in model.backbone.named_modules() if isinstance(m, (TemporalInsert, DifferenceFusion))]
        for path, module in sorted(wrapped, key=lambda item: -item[0].count(".")):  # innermost first
            if getattr(module, "layout", None) is not None:
                raise RuntimeError(
                    f"torch.jit.script: the temporal module at backbone.{path} works on {module.layout.describe()} "
                    "maps, which only eager mode, torch.compile and torch.fx support"
                )
            if isinstance(module, TemporalInsert):
                new: nn.Module = _ScriptableInsert(module.temporal, module.inner, module.after)
            else:
                new = _ScriptableFusion(module.inner, module.alpha, module.beta, fusions[path])
            parent, _, name = path.rpartition(".")
            setattr(model.backbone.get_submodule(parent) if parent else model.backbone, name, new)
        model.fusion_slots = nn.ModuleList(slots)
        model.fusion_handover = None  # torch.fx only
        model.__class__ = type(f"Scriptable{type(self).__name__}", (_ScriptableForward, type(self)), {})
        return model


def _reentrant_checkpointing() -> bool:
    from timm import layers

    return bool(getattr(layers, "use_reentrant_ckpt", lambda: False)())


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        yield


class _MapSlot(nn.Module):
    """Holds one S-TDM map for the length of a scripted forward (shared by a fusion wrapper and the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = None

    def forward(self) -> torch.Tensor:
        value = self.value
        if value is None:
            raise RuntimeError("DifferenceFusion called without its S-TDM map: run the model, which sets it")
        return value

    @torch.jit.export
    def put(self, value: Optional[torch.Tensor]) -> None:  # noqa: UP045 - TorchScript
        self.value = value


# TorchScript types module attributes from the class annotations, and reads them unevaluated: a real type.
_MapSlot.__annotations__ = {"value": Optional[torch.Tensor]}  # noqa: UP045 - TorchScript has no X | None


class _ScriptableInsert(nn.Module):
    """:class:`TemporalInsert` for TorchScript: the same children, one tensor in and out."""

    def __init__(self, temporal: nn.Module, inner: nn.Module, after: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.inner = inner
        self.after = after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.after:
            return self.temporal(self.inner(x))
        return self.inner(self.temporal(x))


class _ScriptableFusion(nn.Module):
    """:class:`DifferenceFusion` for TorchScript: the same ``inner``, the map read from a shared slot."""

    def __init__(self, inner: nn.Module, alpha: float, beta: float, slot: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.alpha = alpha
        self.beta = beta
        self.slot = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fuse_difference(self.inner(x), self.slot(), self.alpha, self.beta)


class _ScriptableForward(nn.Module):
    """``forward_features`` as TorchScript compiles it: no context manager, no ``try``, slots instead
    of module paths. A failing forward leaves the maps in the slots until the next one."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_clip(x, self.num_segments * self.frames_per_segment, self.num_segments, self.frames_per_segment,
                       self.in_chans, self.min_size, self.backbone_name)
        if self.short_term is None:
            return self.backbone.forward_features(x.flatten(0, 1))
        frames, centre = split_clip(x, self.num_segments, self.frames_per_segment)
        stem_map, stage_map = self.short_term(frames)
        maps = [stem_map, stage_map]
        for i, slot in enumerate(self.fusion_slots):
            slot.put(maps[i])
        out = self.backbone.forward_features(centre)
        for slot in self.fusion_slots:
            slot.put(None)
        return out


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
