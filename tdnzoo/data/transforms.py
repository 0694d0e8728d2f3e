"""Clip transforms on ``[T, C, H, W]`` tensors (uint8 or float), the same for every frame of a clip.

They are torchvision ``transforms.v2`` transforms: random parameters are drawn once per call and
applied to the whole clip, and a call may carry the label along (``transform(clip, label)``
returns ``(clip, label)``), which the label-swapping flip uses.

* :class:`MultiScaleCrop`: the official TSN/TSM/TDN training crop: a square-ish crop whose sides
  are picked from ``scales`` (1, .875, .75, .66) of the short side, at one of 13 fixed positions,
  resized to the input size.
* :class:`RandomHorizontalFlip`: flips, and swaps the labels of mirrored classes through
  ``label_map`` (Something-Something: :data:`SOMETHING_FLIP_LABEL_MAP`).
* :class:`ThreeCrop`: three crops along the long side (official 3-crop testing), stacked first.
* :func:`train_transform`, :func:`eval_transform`: the official pipelines; :func:`parse_views`
  reads ``"CLIPSxCROPS"``.

Example:
    >>> t = eval_transform(model.pretrained_cfg)          # resize 256, centre crop 224, normalise
    >>> t(clip_uint8).shape                               # clip_uint8: [T, 3, H, W]
    torch.Size([T, 3, 224, 224])
    >>> clip, label = train_transform(224, label_map=SOMETHING_FLIP_LABEL_MAP)(clip_uint8, 86)
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFICIAL_SCALES",
    "SOMETHING_FLIP_LABEL_MAP",
    "MultiScaleCrop",
    "RandomHorizontalFlip",
    "ThreeCrop",
    "eval_transform",
    "fixed_crop_offsets",
    "parse_views",
    "resolve_eval_sizes",
    "train_transform",
]

_log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_SCALES = (1.0, 0.875, 0.75, 0.66)
# Something-Something V1 and V2 (official class order): "... from left to right" <-> "... from
# right to left" (86, 87 pulling; 93, 94 pushing) and "Turning the camera left/right" (166, 167).
SOMETHING_FLIP_LABEL_MAP: dict[int, int] = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(height, width)``."""
    if isinstance(size, int):
        return size, size
    if len(size) == 1:
        return int(size[0]), int(size[0])
    return int(size[0]), int(size[1])


def fixed_crop_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int, *, more: bool = True) -> list[tuple[int, int]]:
    """The official fixed crop positions ``(left, top)``: corners and centre, plus 8 more when ``more``."""
    w_step = (image_w - crop_w) // 4
    h_step = (image_h - crop_h) // 4
    offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    if more:
        offsets += [
            (0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 4 * h_step), (2 * w_step, 0),
            (w_step, h_step), (3 * w_step, h_step), (w_step, 3 * h_step), (3 * w_step, 3 * h_step),
        ]
    return offsets


class MultiScaleCrop(v2.Transform):
    """The official multi-scale crop (TSN ``GroupMultiScaleCrop``), one draw per clip.

    Crop sides are ``int(short_side * scale)`` for ``scale`` in ``scales``, snapped to the
    output size when within 3 pixels; height and width scales differ by at most
    ``max_distort`` steps; the crop sits at one of the fixed positions (or anywhere when
    ``fix_crop=False``) and is resized to ``size``.

    Args:
        size: output ``(height, width)`` or one int.
        scales: fractions of the short side.
        max_distort: how many scale steps height and width may differ.
        fix_crop: pick from fixed positions (official) rather than anywhere.
        more_fix_crop: 13 fixed positions (official) rather than 5.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scales: Sequence[float] = OFFICIAL_SCALES,
        *,
        max_distort: int = 1,
        fix_crop: bool = True,
        more_fix_crop: bool = True,
        interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        self.size = _pair(size)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0 or max(self.scales) > 1:
            raise ValueError(f"scales must be in (0, 1], got {scales}")
        self.max_distort = max_distort
        self.fix_crop = fix_crop
        self.more_fix_crop = more_fix_crop
        self.interpolation = interpolation
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image_h, image_w = query_size(flat_inputs)
        out_h, out_w = self.size
        base = min(image_w, image_h)
        sides = [int(base * s) for s in self.scales]
        heights = [out_h if abs(s - out_h) < 3 else s for s in sides]
        widths = [out_w if abs(s - out_w) < 3 else s for s in sides]
        pairs = [
            (w, h) for i, h in enumerate(heights) for j, w in enumerate(widths) if abs(i - j) <= self.max_distort
        ]
        crop_w, crop_h = pairs[int(torch.randint(len(pairs), ()))]
        # Snapping can make a side exceed the image (tiny inputs): never crop past the border.
        crop_w, crop_h = min(max(crop_w, 1), image_w), min(max(crop_h, 1), image_h)
        if self.fix_crop:
            offsets = fixed_crop_offsets(image_w, image_h, crop_w, crop_h, more=self.more_fix_crop)
            left, top = offsets[int(torch.randint(len(offsets), ()))]
        else:
            left = int(torch.randint(image_w - crop_w + 1, ()))
            top = int(torch.randint(image_h - crop_h + 1, ()))
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resized_crop(
            inpt, **params, size=list(self.size), interpolation=self.interpolation, antialias=self.antialias
        )


class RandomHorizontalFlip(v2.Transform):
    """Flip the whole clip with probability ``p``; when flipped, map the label through ``label_map``.

    Called as ``t(clip)`` it returns the clip; as ``t(clip, label)`` it returns ``(clip, label)``
    with ``label_map.get(label, label)`` when the clip was flipped. Integer labels (Python ints
    or 0-d integer tensors) are mapped; everything else passes through.

    Args:
        p: flip probability.
        label_map: class index -> class index of its mirror image (e.g. :data:`SOMETHING_FLIP_LABEL_MAP`).
    """

    def __init__(self, p: float = 0.5, label_map: Mapping[int, int] | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}

    def _map(self, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return self.label_map.get(value, value)
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            return torch.tensor(self.label_map.get(int(value), int(value)), dtype=value.dtype)
        return value

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if self.p == 0 or (self.p < 1 and float(torch.rand(())) >= self.p):
            return sample
        flat, spec = tree_flatten(sample)
        needs = self._needs_transform_list(flat)
        out = [F.horizontal_flip(x) if n else (self._map(x) if self.label_map else x) for x, n in zip(flat, needs)]
        return tree_unflatten(out, spec)


class ThreeCrop(v2.Transform):
    """Three ``size`` crops along the long side (start, end, centre), stacked: ``[3, ..., C, h, w]``.

    For landscape frames these are the official ``GroupFullResSample`` crops (left, right,
    centre, vertically centred). Portrait frames get top, bottom and centre (the official code
    would give three identical crops).
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _pair(size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image_h, image_w = query_size(flat_inputs)
        crop_h, crop_w = self.size
        if crop_h > image_h or crop_w > image_w:
            raise ValueError(f"ThreeCrop of {crop_h}x{crop_w} does not fit frames of {image_h}x{image_w}")
        w_step, h_step = (image_w - crop_w) // 4, (image_h - crop_h) // 4
        if image_h > image_w:
            offsets = [(2 * w_step, 0), (2 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
        else:
            offsets = [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 2 * h_step)]
        return {"offsets": offsets}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        crop_h, crop_w = self.size
        crops = [F.crop(inpt, top, left, crop_h, crop_w) for left, top in params["offsets"]]
        return torch.stack([c.as_subclass(torch.Tensor) for c in crops])


def train_transform(
    input_size: int | Sequence[int] = 224,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scales: Sequence[float] = OFFICIAL_SCALES,
    flip: bool = True,
    label_map: Mapping[int, int] | None = None,
    mirrored_classes: bool = False,
) -> v2.Compose:
    """The official training pipeline: multi-scale crop, horizontal flip, float, normalise.

    Args:
        input_size: output side (or ``(h, w)``).
        mean, std: normalisation (the model's ``pretrained_cfg['mean']`` / ``['std']``).
        scales: multi-scale crop fractions.
        flip: random horizontal flips.
        label_map: labels swapped by a flip (mirrored classes).
        mirrored_classes: the dataset has direction-dependent classes (Something-Something). A
            flip without ``label_map`` would corrupt them, so it is then disabled, with a warning.

    Returns:
        a ``v2.Compose`` taking ``clip`` (uint8 ``[T, C, H, W]``) or ``(clip, label)``.
    """
    steps: list[v2.Transform] = [MultiScaleCrop(input_size, scales)]
    if flip and mirrored_classes and not label_map:
        _log.warning("horizontal flip disabled: the dataset has mirrored classes and no flip label map was given")
        flip = False
    if flip:
        steps.append(RandomHorizontalFlip(0.5, label_map))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def _cfg_of(cfg_or_model: Any) -> dict[str, Any]:
    if cfg_or_model is None:
        return {}
    if isinstance(cfg_or_model, Mapping):
        return dict(cfg_or_model)
    return dict(getattr(cfg_or_model, "pretrained_cfg", None) or {})


def resolve_eval_sizes(
    cfg_or_model: Any = None, *, input_size: int | None = None, resize_size: int | None = None
) -> tuple[int, int]:
    """``(crop_size, resize_size)`` from explicit values or a pretrained cfg.

    The crop is ``input_size`` (else the cfg's ``input_size[-1]``, else 224); the short side is
    resized to ``resize_size`` (else ``crop / crop_pct`` with the cfg's ``crop_pct``, default
    0.875: the official 256 for 224).
    """
    cfg = _cfg_of(cfg_or_model)
    if input_size is None:
        size = cfg.get("input_size") or cfg.get("test_input_size") or (3, 224, 224)
        input_size = int(size[-1]) if isinstance(size, (list, tuple)) else int(size)
    if resize_size is None:
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        resize_size = int(round(input_size / crop_pct))
    if resize_size < input_size:
        raise ValueError(f"resize_size ({resize_size}) must be >= input_size ({input_size})")
    return int(input_size), int(resize_size)


def eval_transform(
    cfg_or_model: Any = None,
    *,
    input_size: int | None = None,
    resize_size: int | None = None,
    num_crops: int = 1,
    full_res: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> v2.Compose:
    """The official test pipeline: resize the short side, crop, float, normalise.

    Sizes, mean and std come from a model's ``pretrained_cfg`` (or the dict itself) unless given.

    Args:
        cfg_or_model: a model or a pretrained cfg dict (keys ``input_size``, ``crop_pct``,
            ``mean``, ``std``, all optional).
        input_size: crop side (default: cfg ``input_size``, else 224).
        resize_size: short side before cropping (default: ``input_size / crop_pct``, i.e. 256).
        num_crops: 1 (centre crop, ``[T, C, H, W]`` out) or 3 (:class:`ThreeCrop`,
            ``[3, T, C, H, W]`` out).
        full_res: with 3 crops, crop squares of ``resize_size`` (the official "full resolution"
            30-view protocol) instead of ``input_size``.

    Example:
        >>> eval_transform(model, num_crops=3)(clip).shape    # 256x256 crops for a 224 model
        torch.Size([3, T, 3, 256, 256])
    """
    cfg = _cfg_of(cfg_or_model)
    crop, resize = resolve_eval_sizes(cfg, input_size=input_size, resize_size=resize_size)
    mean = tuple(mean or cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(std or cfg.get("std") or IMAGENET_STD)
    steps: list[v2.Transform] = [v2.Resize(resize, antialias=True)]
    if num_crops == 1:
        steps.append(v2.CenterCrop(crop))
    elif num_crops == 3:
        steps.append(ThreeCrop(resize if full_res else crop))
    else:
        raise ValueError(f"num_crops must be 1 (centre crop) or 3 (three crops), got {num_crops}")
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def parse_views(views: str | Sequence[int]) -> tuple[int, int]:
    """``"10x3"`` -> ``(10, 3)``: clips per video and crops per clip.

    Raises:
        ValueError: not ``CLIPSxCROPS`` with positive clips and 1 or 3 crops.
    """
    if isinstance(views, str):
        parts = views.lower().replace("*", "x").split("x")
        try:
            clips, crops = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"views must look like CLIPSxCROPS, e.g. 1x1 or 10x3; got {views!r}") from None
    else:
        clips, crops = (int(v) for v in views)
    if clips < 1 or crops not in (1, 3):
        raise ValueError(f"views {views!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops
