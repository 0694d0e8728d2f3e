"""The video classifier and ``temporalize``: TSN, TSM, TDN or a composition of their blocks on any timm 2D CNN.

``temporalize`` reads the method table (:mod:`.methods`): which blocks, at which position kind, in
which stages; it has no per-method code.

Model contract (docs/design.md §1): input ``[B, T, 3, H, W]`` with ``T = num_segments *
frames_per_segment`` (segment-major, ImageNet-normalised); output logits ``[B, num_classes]``,
the mean over segments of per-segment logits.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..layers import LongTermStack, SegmentConsensus, ShortTermTDM
from ..layers.shift import split_segments
from .backbone import BackboneLayout, Block, Position, analyze_backbone, unsupported
from .contract import VideoModelContract, check_clip
from .difference import short_term_stream
from .families import refusal
from .fusion import DifferenceFusion
from .insertion import TemporalInsert, replace_module
from .methods import (
    AFTER_STEM,
    BLOCK_INPUT,
    METHOD_TABLE,
    METHODS,
    POSITION_MIXING,
    BuildOptions,
    TemporalBlock,
    blocks_of,
    composition_name,
    insertion_units,
    parse_method,
    recorded_options,
    resolve_blocks,
)

__all__ = ["METHODS", "VideoClassifier", "official_fusion_weights", "temporalize"]

torch.fx.wrap("check_clip")  # a leaf for torch.fx (see .contract)

def official_fusion_weights(num_segments: int) -> tuple[float, float]:
    """S-TDM fusion ``(alpha, beta)`` of the official TDN: (0.5, 0.5) at 8 segments, else (0.75, 0.25)."""
    return (0.5, 0.5) if num_segments == 8 else (0.75, 0.25)


class VideoClassifier(VideoModelContract, nn.Module):
    """A timm 2D CNN made temporal: TSN, TSM, TDN or a composition of their blocks.

    Build it with :func:`temporalize` or :func:`tdnzoo.create_model`. timm's model contract
    (``feature_info``, ``forward_intermediates``, ``set_grad_checkpointing``, ``group_matcher``,
    torch.fx) comes from :class:`~tdnzoo.models.contract.VideoModelContract`.

    Attributes:
        method: the method's name: a preset (``'tsn'``, ``'tsm'``, ``'tdn'``, a registered one), or
            a composition of one (``'tsn+stdm'``, ``'tdn-ltdm'``; :mod:`tdnzoo.models.methods`).
        num_segments: segments per clip.
        frames_per_segment: consecutive frames per segment (5 with S-TDM, else 1).
        num_classes: classifier outputs (0 when the classifier was removed).
        num_features: channels of ``forward_features``.
        head_hidden_size: width of ``forward_head(x, pre_logits=True)``.
        backbone: the timm model, with temporal modules inserted in its blocks.
        probe_size: a frame size the backbone is known to take (construction ran at it).
        short_term: the S-TDM difference stream (TDN's), else ``None``.
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

        ``[B*num_segments, C, h, w]`` for CNNs (tokens ``[B*num_segments, L, C]`` for ViTs). With
        S-TDM, its maps are handed to the backbone's :class:`~tdnzoo.models.fusion.DifferenceFusion`
        wrappers for this one call and cleared afterwards, whatever happens
        (:meth:`~tdnzoo.models.fusion.FusionHandOver.run`).
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


def _insert_blocks(backbone: nn.Module, layout: BackboneLayout, unit: list[TemporalBlock], options: BuildOptions,
                   name: str) -> list[Block]:
    """Insert one unit of the table (a block, or the blocks sharing a stack) at its position in every block
    of its stages; returns the backbone's blocks that got it."""
    kind = "shift" if unit[0].position == BLOCK_INPUT else "difference"
    stages = tuple(sorted({s for b in unit for s in b.stages_in(options)}))
    chosen = []
    for block in _temporal_blocks(layout, stages, kind):
        members = [b for b in unit if block.stage in b.stages_in(options)
                   and block.index_in_stage % (getattr(options, b.every_option) if b.every_option else 1) == 0]
        if members:
            chosen.append((block, members))
    if not chosen:
        raise unsupported(name, layout.family, f"no block in stages {stages} has a place for {unit[0].name()}")
    for block, members in chosen:
        if members[0].stack is None:
            _insert(backbone, getattr(block, kind), lambda channels, b=members[0]: b.make(channels, options))
        else:
            _insert(backbone, getattr(block, kind), lambda channels, members=members: LongTermStack(
                OrderedDict((b.stack, b.make(channels, options)) for b in members)))
    return [block for block, _ in chosen]


def temporalize(
    backbone: nn.Module | str,
    method: str = "tdn",
    num_segments: int = 8,
    *,
    num_classes: int | None = None,
    shift: bool | None = None,
    short_term: bool | None = None,
    long_term: bool | None = None,
    temporal_conv: bool | None = None,
    blocks: dict[str, bool] | None = None,
    frames_per_segment: int | None = None,
    shift_div: int = 8,
    shift_stages: tuple[int, ...] = (2, 3, 4, 5),
    shift_every: int | None = None,
    long_term_stages: tuple[int, ...] = (3, 4, 5),
    long_term_reduction: int = 16,
    fusion_weights: tuple[float, float] | None = None,
    drop_rate: float = 0.5,
    pretrained_backbone: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
    causal: bool = False,
) -> VideoClassifier:
    """Turn a timm 2D CNN into a video classifier: TSN, TSM, TDN, or any composition of their blocks.

    The method is a preset of :data:`~tdnzoo.models.methods.METHOD_TABLE`; the block keywords switch
    each temporal block on or off from the preset's default (``None`` keeps it), as do ``+BLOCK`` /
    ``-BLOCK`` in the method (``'tsn+stdm'``, ``'tdn-ltdm'``). Stages are numbered as in the papers:
    stage ``k`` outputs at reduction ``2**k`` (stage 2 is ResNet's ``layer1``). Defaults are the
    official ones. The backbone keeps its own forward: temporal modules wrap the ops they precede
    (see :mod:`tdnzoo.models.backbone` for where), and S-TDM's maps join the backbone through
    :class:`~tdnzoo.models.fusion.DifferenceFusion` wrappers on the ops producing the stem's and the
    first stage's outputs.

    Args:
        backbone: a timm model name or instance (modified in place when an instance).
        method: ``'tsn'``, ``'tsm'`` (temporal shift), ``'tdn'`` (temporal difference), a registered
            method, or one of them with ``+BLOCK`` / ``-BLOCK`` (``shift``, ``stdm``, ``ltdm``, ``tconv``).
        num_segments: segments per clip.
        num_classes: classifier outputs; keeps the instance's head when ``None``.
        shift: a temporal shift before the first op of each residual block of ``shift_stages`` (TSM).
        short_term: S-TDM, a difference stream fused after the stem and the first stage (TDN).
        long_term: L-TDM before the first position-mixing op of the blocks of ``long_term_stages`` (TDN).
        temporal_conv: a learnable temporal conv, initialised as the shift, after L-TDM (TDN).
        blocks: switches of other blocks of the table (registered ones), by keyword.
        frames_per_segment: frames per segment; 5 with S-TDM, else 1.
        shift_div: the shift moves ``1/shift_div`` of the channels each way; the temporal conv starts as that shift.
        shift_stages: stages whose blocks get a shift.
        shift_every: shift every n-th block of a stage; ``None`` is the official rule
            (every other block when stage 4 has 23+ blocks, as ResNet-101; else every block).
        long_term_stages: stages with L-TDM and the temporal conv (official: 3, 4, 5).
        long_term_reduction: channel reduction inside L-TDM (official: 16).
        fusion_weights: S-TDM fusion ``(alpha, beta)``; ``None`` is the official rule,
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
        >>> temporalize("resnet18", "tsn", 8, short_term=True).method  # TSN + S-TDM
        'tsn+stdm'
    """
    preset, named = parse_method(method)
    causal = bool(named.pop("causal", causal))  # '+causal' in the name is the causal keyword
    switches = {**named, **(blocks or {})}
    for keyword, value in (("shift", shift), ("short_term", short_term), ("long_term", long_term),
                           ("temporal_conv", temporal_conv)):
        if value is not None:
            switches[keyword] = value
    chosen = resolve_blocks(preset, switches)
    on = blocks_of(chosen)
    composed = composition_name(preset, chosen) + ("+causal" if causal and on else "")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    for block in on:
        if num_segments < block.min_segments:
            raise ValueError(f"{composed.upper()}: {block.name()} needs num_segments >= {block.min_segments}")
    needed = max((b.frames_per_segment for b in on), default=1)
    if frames_per_segment is None:
        frames_per_segment = needed
    if needed == 1 and frames_per_segment != 1:
        raise ValueError(f"{composed.upper()} takes one frame per segment (only S-TDM reads more), got "
                         f"frames_per_segment={frames_per_segment}")

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
    if on and refusal(layout.family) is not None:
        raise unsupported(name, layout.family, refusal(layout.family))
    options = BuildOptions(num_segments, frames_per_segment, shift_div, tuple(shift_stages),
                           shift_every or _default_shift_every(layout), tuple(long_term_stages), long_term_reduction,
                           causal)
    stream = None
    fusion_points: tuple[str, ...] = ()
    alpha_beta = (1.0, 0.0)
    min_size = layout.min_size
    stem = [b for b in on if b.position == AFTER_STEM]
    if stem:
        if not layout.fusion_points:
            raise unsupported(name, layout.family, f"S-TDM needs a stem: {layout.stem_problem}")
        stream = _checked_short_term(layout, num_segments, frames_per_segment)  # copied before any insertion
        alpha_beta = tuple(fusion_weights) if fusion_weights is not None else official_fusion_weights(num_segments)
    for position in (BLOCK_INPUT, POSITION_MIXING):
        for unit in insertion_units(on, position):
            placed = _insert_blocks(backbone, layout, unit, options, name)
            wanted = max(b.min_map for b in unit)
            if wanted > 1:  # L-TDM average-pools 2x2: its stages need maps of at least 2x2
                min_size = max(min_size, int(wanted * max(b.reduction for b in placed)))
    if stem:
        fusion_points = _insert_fusions(backbone, layout.fusion_points, alpha_beta)

    given = {"frames_per_segment": frames_per_segment, "shift_div": shift_div, "shift_stages": tuple(shift_stages),
             "shift_every": shift_every, "long_term_stages": tuple(long_term_stages),
             "long_term_reduction": long_term_reduction,
             "fusion_weights": tuple(alpha_beta) if fusion_weights is not None else None}
    model_args: dict[str, Any] = {"num_segments": num_segments, "num_classes": int(backbone.num_classes)}
    model_args.update({option: given[option] for option in recorded_options(on)})
    model_args.update({k: v for k, v in chosen.items() if v or v != (k in METHOD_TABLE[preset].keywords())})

    cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
    pretrained_cfg = {
        "architecture": f"{composed}_{name}",
        "method": composed,
        "backbone": name,
        "temporal_blocks": [b.keyword for b in on],
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
    if causal:  # every temporal layer was built reading past segments only (BuildOptions.causal)
        model_args["causal"] = pretrained_cfg["causal"] = True
    model = VideoClassifier(
        backbone,
        method=composed,
        num_segments=num_segments,
        frames_per_segment=frames_per_segment,
        layout=layout,
        short_term=stream,
        fusion_points=fusion_points,
        fusion_weights=alpha_beta,
        min_size=min_size,
        model_args=model_args,
        pretrained_cfg=pretrained_cfg,
    )
    check_temporal_modules_run(model, layout.size)
    return model
