"""The video classifier and ``temporalize``: TSN, TSM or TDN on any timm 2D CNN.

Model contract (docs/design.md §1): input ``[B, T, 3, H, W]`` with ``T = num_segments *
frames_per_segment`` (segment-major, ImageNet-normalised); output logits ``[B, num_classes]``,
the mean over segments of per-segment logits.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..layers import LongTermStack, LongTermTDM, SegmentConsensus, ShortTermTDM, TemporalConv, TemporalShift
from ..layers.shift import split_segments
from .backbone import BackboneLayout, Block, Position, analyze_backbone, unsupported
from .causal import make_causal
from .contract import VideoModelContract, check_clip
from .difference import short_term_stream
from .families import refusal
from .fusion import DifferenceFusion
from .insertion import TemporalInsert, replace_module

__all__ = ["METHODS", "VideoClassifier", "official_fusion_weights", "temporalize"]

torch.fx.wrap("check_clip")  # a leaf for torch.fx (see .contract)

METHODS = ("tsn", "tsm", "tdn")


def official_fusion_weights(num_segments: int) -> tuple[float, float]:
    """S-TDM fusion ``(alpha, beta)`` of the official TDN: (0.5, 0.5) at 8 segments, else (0.75, 0.25)."""
    return (0.5, 0.5) if num_segments == 8 else (0.75, 0.25)


class VideoClassifier(VideoModelContract, nn.Module):
    """A timm 2D CNN made temporal: TSN, TSM or TDN.

    Build it with :func:`temporalize` or :func:`tdnzoo.create_model`. timm's model contract
    (``feature_info``, ``forward_intermediates``, ``set_grad_checkpointing``, ``group_matcher``,
    torch.fx, TorchScript) comes from :class:`~tdnzoo.models.contract.VideoModelContract`.

    Attributes:
        method: ``'tsn'``, ``'tsm'`` or ``'tdn'``.
        num_segments: segments per clip.
        frames_per_segment: consecutive frames per segment (5 for TDN, else 1).
        num_classes: classifier outputs (0 when the classifier was removed).
        num_features: channels of ``forward_features``.
        head_hidden_size: width of ``forward_head(x, pre_logits=True)``.
        backbone: the timm model, with temporal modules inserted in its blocks.
        probe_size: a frame size the backbone is known to take (construction ran at it).
        short_term: TDN's S-TDM difference stream, else ``None``.
        pretrained_cfg: metadata dict, as in timm.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        method: str,
        num_segments: int,
        frames_per_segment: int = 1,
        layout: BackboneLayout,
        short_term: ShortTermTDM | None = None,
        fusion_points: tuple[str, ...] = (),
        fusion_weights: tuple[float, float] = (0.5, 0.5),
        min_size: int | None = None,
        model_args: dict[str, Any] | None = None,
        pretrained_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.method = method
        self.num_segments = num_segments
        self.frames_per_segment = frames_per_segment
        self.backbone = backbone
        self.short_term = short_term
        self.consensus = SegmentConsensus(num_segments)
        self.fusion_weights = tuple(float(w) for w in fusion_weights)
        # Paths in the backbone of the DifferenceFusion wrappers: after the stem, after the first stage.
        self.fusion_points = tuple(fusion_points)
        self.min_size = int(min_size or layout.min_size)
        # A frame size the backbone takes (the construction checks ran at it): some take only
        # sizes divisible by their patch (14) or window.
        self.probe_size = int(layout.size)
        self.backbone_name = layout.name
        self.backbone_family = layout.family
        self.num_classes = int(getattr(backbone, "num_classes", 0))
        self.model_args = dict(model_args or {})
        self.pretrained_cfg = dict(pretrained_cfg or {})
        self._init_contract()  # num_features, head_hidden_size, feature_info, cfg fields

    # -- input ----------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """Frames per clip the model takes: ``num_segments * frames_per_segment``."""
        return self.num_segments * self.frames_per_segment

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` itself if it is a clip this model takes, else a ``ValueError`` saying what was expected."""
        return check_clip(x, self.num_frames, self.num_segments, self.frames_per_segment, self.in_chans,
                          self.min_size, self.backbone_name)

    # -- timm contract --------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> per-segment features, as the backbone's ``forward_features`` returns them.

        ``[B*num_segments, C, h, w]`` for CNNs (tokens ``[B*num_segments, L, C]`` for ViTs). For TDN
        the S-TDM maps are handed to the backbone's :class:`~tdnzoo.models.fusion.DifferenceFusion`
        wrappers for this one call and cleared afterwards, whatever happens
        (:meth:`~tdnzoo.models.contract.VideoModelContract.difference_maps`).
        """
        return self._run_backbone(self.backbone.forward_features, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout, classifier per segment, then the mean over segments.

        ``pre_logits=True`` returns the pooled features ``[B, num_features]``.
        """
        return self.consensus(self.backbone.forward_head(x, pre_logits=pre_logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_segments(self, x: torch.Tensor) -> torch.Tensor:
        """Per-segment logits ``[B, num_segments, num_classes]``: ``forward`` is their mean.

        For a causal model, segment ``t``'s logits are what :func:`tdnzoo.stream` gives at step ``t``.
        """
        return split_segments(self.backbone.forward_head(self.forward_features(x)), self.num_segments)

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        """Replace the classifier with a freshly initialised one of ``num_classes`` outputs."""
        self.backbone.reset_classifier(num_classes, *args, **kwargs)
        self.num_classes = num_classes
        self.model_args["num_classes"] = num_classes
        self.pretrained_cfg["num_classes"] = num_classes

    def extra_repr(self) -> str:
        return (
            f"method={self.method}, backbone={self.backbone_name}, num_segments={self.num_segments}, "
            f"frames_per_segment={self.frames_per_segment}, num_classes={self.num_classes}"
        )


def _built_size(backbone_kwargs: dict[str, Any] | None) -> int | None:
    """The ``img_size`` a backbone name was built with, if given (``int`` or ``(h, w)``)."""
    size = (backbone_kwargs or {}).get("img_size")
    if isinstance(size, (tuple, list)) and size:
        size = size[-1]
    return int(size) if isinstance(size, int) else None


def _default_shift_every(layout: BackboneLayout) -> int:
    # Official TSM shifts every other block when the third stage is very deep (ResNet-101).
    return 2 if layout.stage_sizes().get(4, 0) >= 23 else 1


def _temporal_blocks(layout: BackboneLayout, stages: tuple[int, ...], kind: str) -> list[Block]:
    """Blocks of ``stages`` with a place for a ``kind`` ('shift' or 'difference') module.

    Only residual blocks when the stages have any (a shift without an identity path loses what it
    moves; official TSM on MobileNetV2 skips such blocks), else all of them: TSM's in-place variant.
    """
    blocks = [b for b in layout.blocks_in(stages) if getattr(b, kind) is not None]
    residual = [b for b in blocks if b.residual]
    return residual or blocks


def _checked_short_term(layout: BackboneLayout, num_segments: int, frames_per_segment: int) -> ShortTermTDM:
    """The S-TDM stream, run once on the dry run's frames; without the stage copy if only that fails.

    S-TDM runs its copies on average-pooled (half-size) differences. A first stage that cannot take
    that size leaves the stem's fusion alone (``layout`` is updated to say so).

    Raises:
        UnsupportedBackboneError: the stem copy itself cannot run on them.
    """
    frames = torch.randn(num_segments, 3 * frames_per_segment, layout.size, layout.size)
    while True:
        try:
            stream = short_term_stream(layout, num_segments, frames_per_segment)
            with torch.no_grad():
                stream.eval()(frames)
            return stream.train()
        except Exception as exc:  # noqa: BLE001 - reported below or retried without the stage
            if layout.first_stage is None:
                raise unsupported(layout.name, layout.family, "its stem does not run on the half-size difference "
                                  f"frames S-TDM gives it ({type(exc).__name__}: {exc})") from exc
            layout.first_stage = None
            layout.fusion_points = layout.fusion_points[:1]


def _insert(backbone: nn.Module, position: Position, make) -> None:
    """Wrap the op at ``position`` in a :class:`TemporalInsert` of ``make(channels)``."""
    temporal = make(position.layout.channels)
    replace_module(backbone, position.module, lambda op: TemporalInsert(temporal, op, position.layout, position.after))


def _insert_fusions(backbone: nn.Module, points: list[Position], weights: tuple[float, float]) -> tuple[str, ...]:
    """Wrap each fusion point's op in a :class:`DifferenceFusion`; returns the wrappers' paths."""
    wrappers = [
        replace_module(backbone, p.module, lambda op, p=p: DifferenceFusion(op, *weights, layout=p.layout)) for p in points
    ]
    paths = {id(m): name for name, m in backbone.named_modules()}
    return tuple(paths[id(w)] for w in wrappers)


def check_temporal_modules_run(model: "VideoClassifier", size: int) -> None:
    """Run the model once and check that its forward reaches every temporal module and fusion point.

    A module inserted where the backbone's forward never goes would silently do nothing.

    Raises:
        UnsupportedBackboneError: naming the modules the forward skipped.
    """
    inserted = {name: m for name, m in model.named_modules() if isinstance(m, (TemporalInsert, DifferenceFusion))}
    if not inserted:
        return
    reached: set[str] = set()
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: reached.add(name)) for name, m in inserted.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(1, model.num_frames, 3, size, size, generator=torch.Generator().manual_seed(0)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    skipped = sorted(set(inserted) - reached)
    if skipped:
        raise unsupported(model.backbone_name, model.backbone_family,
                          f"its forward does not run the temporal modules inserted at {skipped[:4]}")


def temporalize(
    backbone: nn.Module | str,
    method: str = "tdn",
    num_segments: int = 8,
    *,
    num_classes: int | None = None,
    frames_per_segment: int | None = None,
    shift_div: int = 8,
    shift_stages: tuple[int, ...] = (2, 3, 4, 5),
    shift_every: int | None = None,
    long_term: bool = True,
    long_term_stages: tuple[int, ...] = (3, 4, 5),
    long_term_reduction: int = 16,
    temporal_conv: bool = True,
    fusion_weights: tuple[float, float] | None = None,
    drop_rate: float = 0.5,
    pretrained_backbone: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
    causal: bool = False,
) -> VideoClassifier:
    """Turn a timm 2D CNN into a TSN, TSM or TDN video classifier.

    Stages are numbered as in the papers: stage ``k`` outputs at reduction ``2**k`` (stage 2 is
    ResNet's ``layer1``). Defaults are the official ones. The backbone keeps its own forward:
    temporal modules wrap the ops they precede (see :mod:`tdnzoo.models.backbone` for where),
    and TDN's S-TDM maps join the backbone through :class:`~tdnzoo.models.fusion.DifferenceFusion`
    wrappers on the ops producing the stem's and the first stage's outputs.

    Args:
        backbone: a timm model name or instance (modified in place when an instance).
        method: ``'tsn'``, ``'tsm'`` (temporal shift) or ``'tdn'`` (temporal difference).
        num_segments: segments per clip.
        num_classes: classifier outputs; keeps the instance's head when ``None``.
        frames_per_segment: frames per segment; 5 for TDN, 1 for TSN and TSM.
        shift_div: TSM shifts ``1/shift_div`` of the channels each way; TDN's temporal conv
            starts as that shift.
        shift_stages: TSM stages whose blocks get a shift.
        shift_every: TSM shifts every n-th block of a stage; ``None`` is the official rule
            (every other block when stage 4 has 23+ blocks, as ResNet-101; else every block).
        long_term: TDN: add L-TDM to the blocks of ``long_term_stages``.
        long_term_stages: TDN stages with L-TDM and the temporal conv (official: 3, 4, 5).
        long_term_reduction: channel reduction inside L-TDM (official: 16).
        temporal_conv: TDN: add the learnable temporal conv after each L-TDM.
        fusion_weights: TDN S-TDM fusion ``(alpha, beta)``; ``None`` is the official rule,
            (0.5, 0.5) at 8 segments and (0.75, 0.25) otherwise.
        drop_rate: dropout before the classifier (official: 0.5); only with a backbone name.
        pretrained_backbone: load timm's ImageNet weights for the backbone (needs them cached).
        backbone_kwargs: more keyword arguments for ``timm.create_model``.
        causal: temporal layers that read past segments only, for streaming (:mod:`.causal`);
            the same parameters. TSN is causal as it is.

    Example:
        >>> model = temporalize("convnext_atto", "tdn", num_segments=8, num_classes=174)
        >>> model(torch.randn(1, 40, 3, 112, 112)).shape
        torch.Size([1, 174])
    """
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}': expected one of {', '.join(METHODS)}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if method == "tdn" and long_term and num_segments < 2:
        raise ValueError("TDN's long-term differences need num_segments >= 2")
    if frames_per_segment is None:
        frames_per_segment = 5 if method == "tdn" else 1
    if method != "tdn" and frames_per_segment != 1:
        raise ValueError(f"{method.upper()} takes one frame per segment, got frames_per_segment={frames_per_segment}")

    if isinstance(backbone, str):
        import timm

        name = backbone
        kwargs = dict(backbone_kwargs or {})
        kwargs.setdefault("drop_rate", drop_rate)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        backbone = timm.create_model(name, pretrained=pretrained_backbone, **kwargs)
    else:
        name = (getattr(backbone, "pretrained_cfg", None) or {}).get("architecture") or type(backbone).__name__
        if num_classes is not None and num_classes != getattr(backbone, "num_classes", None):
            backbone.reset_classifier(num_classes)

    layout = analyze_backbone(backbone, name, img_size=_built_size(backbone_kwargs))
    if method != "tsn" and refusal(layout.family) is not None:
        raise unsupported(name, layout.family, refusal(layout.family))
    model_args: dict[str, Any] = {"num_segments": num_segments, "num_classes": int(backbone.num_classes)}
    short_term = None
    fusion_points: tuple[str, ...] = ()
    alpha_beta = (1.0, 0.0)
    min_size = layout.min_size

    if method == "tsm":
        every = shift_every or _default_shift_every(layout)
        blocks = [b for b in _temporal_blocks(layout, shift_stages, "shift") if b.index_in_stage % every == 0]
        if not blocks:
            raise unsupported(name, layout.family, f"no block in stages {tuple(shift_stages)} has a place for a shift")
        for block in blocks:
            _insert(backbone, block.shift, lambda channels: TemporalShift(num_segments, shift_div))
        model_args.update(shift_div=shift_div, shift_stages=tuple(shift_stages), shift_every=shift_every)
    elif method == "tdn":
        if not layout.fusion_points:
            raise unsupported(name, layout.family, f"S-TDM needs a stem: {layout.stem_problem}")
        short_term = _checked_short_term(layout, num_segments, frames_per_segment)  # copied before any insertion
        alpha_beta = tuple(fusion_weights) if fusion_weights is not None else official_fusion_weights(num_segments)
        if long_term or temporal_conv:
            blocks = _temporal_blocks(layout, long_term_stages, "difference")
            if not blocks:
                raise unsupported(name, layout.family, f"no block in stages {tuple(long_term_stages)} has a place for L-TDM")

            def make(channels: int) -> nn.Module:
                parts: OrderedDict[str, nn.Module] = OrderedDict()
                if long_term:
                    parts["ltdm"] = LongTermTDM(channels, num_segments, long_term_reduction)
                if temporal_conv:
                    parts["tconv"] = TemporalConv(channels, num_segments, shift_div)
                return LongTermStack(parts)

            for block in blocks:
                _insert(backbone, block.difference, make)
            if long_term:  # L-TDM average-pools 2x2: its stages need maps of at least 2x2
                min_size = max(min_size, int(2 * max(b.reduction for b in blocks)))
        fusion_points = _insert_fusions(backbone, layout.fusion_points, alpha_beta)
        model_args.update(
            frames_per_segment=frames_per_segment,
            shift_div=shift_div,
            long_term=long_term,
            long_term_stages=tuple(long_term_stages),
            long_term_reduction=long_term_reduction,
            temporal_conv=temporal_conv,
            fusion_weights=tuple(alpha_beta) if fusion_weights is not None else None,
        )

    cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
    pretrained_cfg = {
        "architecture": f"{method}_{name}",
        "method": method,
        "backbone": name,
        "num_classes": int(backbone.num_classes),
        "num_segments": num_segments,
        "frames_per_segment": frames_per_segment,
        # Video recipes (TSN/TSM/TDN) resize the short side to 256 and crop 224, bilinear,
        # whatever ImageNet recipe the backbone had (a backbone that takes one size only: that
        # size); normalisation follows the backbone.
        "input_size": (3, layout.size, layout.size) if layout.fixed else (3, 224, 224),
        "fixed_input_size": layout.fixed,
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    }
    if causal:  # the streaming variant: each temporal layer swapped for its causal construction
        make_causal(backbone)
        model_args["causal"] = pretrained_cfg["causal"] = True
    model = VideoClassifier(
        backbone,
        method=method,
        num_segments=num_segments,
        frames_per_segment=frames_per_segment,
        layout=layout,
        short_term=short_term,
        fusion_points=fusion_points,
        fusion_weights=alpha_beta,
        min_size=min_size,
        model_args=model_args,
        pretrained_cfg=pretrained_cfg,
    )
    check_temporal_modules_run(model, layout.size)
    return model
