"""How a model wants its input: which frames, which crops, which normalisation.

:func:`resolve_view_spec` reads a model's ``pretrained_cfg`` (segments, frames per segment,
input size, resize, mean/std and the test protocol of its tag: ``test_clips`` x ``test_crops``,
``test_crop_size``, ``test_sampling``) into a :class:`ViewSpec`, which then samples frame
indices and builds the transform. Explicit arguments override the cfg.

Example:
    >>> spec = resolve_view_spec(model)                 # the tag's protocol, e.g. 10x3 for Kinetics
    >>> spec = resolve_view_spec(model, views="1x1")
    >>> views, num_frames = spec.load("clip.mp4")       # [V, T, 3, H, W]
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from ..data.damage import SampledFrames, read_sampled
from ..data.decode import open_video
from ..data.sampling import expand_windows, multi_clip_indices
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, parse_views, resolve_eval_sizes

__all__ = ["SAMPLINGS", "ViewSpec", "dense_clip_indices", "resolve_view_spec"]

SAMPLINGS = ("uniform", "dense")


def dense_clip_indices(
    num_frames: int, num_segments: int, frames_per_segment: int = 1, *, num_clips: int = 1, span: int = 64
) -> list[list[int]]:
    """Official TSM dense test sampling: ``num_segments`` starts every ``span // num_segments`` frames
    inside a ``span``-frame window, the ``num_clips`` windows evenly spread over the video, wrapping
    around short videos (``% num_frames``), one index list per clip.
    """
    if num_frames < 1 or num_segments < 1 or num_clips < 1:
        raise ValueError(f"need num_frames, num_segments and num_clips >= 1, got {num_frames}, {num_segments}, {num_clips}")
    last = max(1, 1 + num_frames - span) - 1
    stride = max(1, span // num_segments)
    if num_clips == 1:
        clip_starts = [0]
    else:  # as numpy.linspace(0, last, num_clips, dtype=int): j * step truncated, the end exact
        step = last / (num_clips - 1)
        clip_starts = [int(j * step) for j in range(num_clips - 1)] + [last]
    return [
        expand_windows([(i * stride + s) % num_frames for i in range(num_segments)], frames_per_segment, num_frames)
        for s in clip_starts
    ]


@dataclass(frozen=True)
class ViewSpec:
    """Sampling and transform of the test views of a model (see :func:`resolve_view_spec`).

    Attributes:
        num_segments, frames_per_segment: the model's clip layout.
        clips, crops: views per video (``CLIPSxCROPS``).
        input_size: crop side for one crop; ``resize_size``: short side before cropping.
        full_res: three crops take the whole resized short side (official full-resolution testing).
        mean, std: normalisation.
        sampling: ``'uniform'`` (TSN segment centres, clips spread in each segment) or ``'dense'`` (TSM Kinetics).
    """

    num_segments: int
    frames_per_segment: int = 1
    clips: int = 1
    crops: int = 1
    input_size: int = 224
    resize_size: int = 256
    full_res: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    sampling: str = "uniform"

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    @property
    def num_frames(self) -> int:
        """Frames per clip: ``num_segments * frames_per_segment``."""
        return self.num_segments * self.frames_per_segment

    @property
    def num_views(self) -> int:
        return self.clips * self.crops

    @property
    def views(self) -> str:
        return f"{self.clips}x{self.crops}"

    @property
    def crop_size(self) -> int:
        """Side of the frames the model receives."""
        return self.resize_size if self.crops == 3 and self.full_res else self.input_size

    def clip_indices(self, num_frames: int, *, sampling: str | None = None) -> list[list[int]]:
        """0-based frame indices of the ``clips`` test clips of a ``num_frames``-frame video."""
        if (sampling or self.sampling) == "dense":
            return dense_clip_indices(num_frames, self.num_segments, self.frames_per_segment, num_clips=self.clips)
        return multi_clip_indices(num_frames, self.num_segments, self.frames_per_segment, num_clips=self.clips)

    def transform(self) -> v2.Compose:
        """uint8 ``[T, 3, H, W]`` -> float ``[T, 3, h, w]`` (one crop) or ``[3, T, 3, h, w]`` (three)."""
        return eval_transform(
            None, input_size=self.input_size, resize_size=self.resize_size, num_crops=self.crops,
            full_res=self.full_res, mean=self.mean, std=self.std,
        )

    def stack(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Transformed clips -> ``[V, T, 3, h, w]``, clip-major (as the evaluation datasets)."""
        return torch.cat([o if o.dim() == 5 else o.unsqueeze(0) for o in outputs])

    def load(self, path: str | os.PathLike, *, backend: str | None = None) -> tuple[torch.Tensor, int]:
        """The views of one video (file or frame folder) and its frame count (see :meth:`load_sampled`)."""
        views, read = self.load_sampled(path, backend=backend)
        return views, read.num_frames

    def load_sampled(self, path: str | os.PathLike, *, backend: str | None = None) -> tuple[torch.Tensor, SampledFrames]:
        """The views of one video and how it was read: its real frame count and what it declares.

        Raises:
            VideoDecodeError: the video cannot be read.
        """
        with open_video(path, backend=backend) as reader:  # a video cut short: sampled within its real frames
            read = read_sampled(reader, lambda n: [i for clip in self.clip_indices(n) for i in clip])
        transform = self.transform()
        clips = read.frames.permute(0, 3, 1, 2).split(self.num_frames)
        return self.stack([transform(clip) for clip in clips]), read

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "views": self.views, "crop_size": self.crop_size}


def _cfg_views(cfg: Mapping[str, Any]) -> str | None:
    views = cfg.get("test_views")
    if isinstance(views, (list, tuple)) and len(views) == 2:
        return f"{int(views[0])}x{int(views[1])}"
    if isinstance(views, str):
        return views
    if cfg.get("test_clips") or cfg.get("test_crops"):
        return f"{int(cfg.get('test_clips') or 1)}x{int(cfg.get('test_crops') or 1)}"
    return None


def resolve_view_spec(
    model: Any,
    *,
    views: str | Sequence[int] | None = None,
    input_size: int | None = None,
    full_res: bool | None = None,
    sampling: str | None = None,
) -> ViewSpec:
    """The test views of ``model`` from its ``pretrained_cfg``, with explicit overrides.

    Args:
        model: anything with ``num_segments``, ``frames_per_segment`` and ``pretrained_cfg``.
        views: ``CLIPSxCROPS``; default: the cfg's test protocol (``test_clips`` x ``test_crops``), else ``1x1``.
        input_size: crop side; default the cfg's ``input_size`` (and its ``test_resize`` short side).
        full_res: three crops of the full resized side; default: as the cfg's ``test_crop_size`` says, else True.
        sampling: ``'uniform'`` or ``'dense'``; default the cfg's ``test_sampling``, else uniform.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    clips, crops = parse_views(views if views is not None else (_cfg_views(cfg) or "1x1"))
    crop, resize = resolve_eval_sizes(cfg, input_size=input_size)
    test_resize = cfg.get("test_resize")
    if input_size is None and test_resize and int(test_resize) >= crop:
        resize = int(test_resize)
    if full_res is None:
        # The tags record the side of their 3-crop views: the resized side means full resolution.
        test_crop = cfg.get("test_crop_size")
        full_res = True if not test_crop or input_size is not None else int(test_crop) >= resize
    sampling = sampling or str(cfg.get("test_sampling") or "uniform")
    if sampling not in SAMPLINGS:
        sampling = "uniform"  # an unknown protocol name in a cfg: fall back to the official TSN rule
    return ViewSpec(
        num_segments=int(model.num_segments), frames_per_segment=int(getattr(model, "frames_per_segment", 1)),
        clips=clips, crops=crops, input_size=crop, resize_size=resize, full_res=bool(full_res),
        mean=tuple(float(m) for m in (cfg.get("mean") or IMAGENET_MEAN)),
        std=tuple(float(s) for s in (cfg.get("std") or IMAGENET_STD)), sampling=sampling,
    )
