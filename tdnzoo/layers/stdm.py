"""TDN's short-term temporal difference module (S-TDM) and its fusion into the RGB stream.

Wang et al., CVPR 2021, section 3.2; official ``TSN`` forward of MCG-NJU/TDN (``conv1_5``,
``resnext_layer1``, the ``0.5 * x + 0.5 * interpolate(...)`` fusions); ``docs/design.md`` section 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from .shift import split_segments

torch.fx.wrap("split_segments")  # a leaf for torch.fx (see .shift)

__all__ = ["ShortTermTDM", "frame_differences", "fuse_difference"]


@register_notrace_function  # checks the shape: a leaf for torch.fx and timm's tracer (see .shift)
def frame_differences(frames: torch.Tensor, frames_per_segment: int) -> torch.Tensor:
    """Differences of consecutive frames within each segment.

    ``[N, F*3, H, W]`` (F frames, RGB last, as the official input) ->
    ``[N, (F-1)*3, H, W]`` stacked difference-major: ``[x2-x1, x3-x2, ...]``.
    """
    if frames.shape[1] != 3 * frames_per_segment:
        raise ValueError(f"expected {3 * frames_per_segment} channels ({frames_per_segment} RGB frames), got {frames.shape[1]}")
    # Frame k holds channels [3k, 3k+3): channel c of the stack is frame (c+3) minus frame c, with no
    # reshape, so compiled code reads the frames in place.
    return frames[:, 3:] - frames[:, :-3]


torch.fx.wrap("frame_differences")


@register_notrace_function  # compares sizes: a leaf for torch.fx and timm's tracer
def resize_like(diff: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``diff`` upsampled (nearest) to the spatial size of ``x``, or ``diff`` itself when it has it."""
    if diff.shape[-2:] != x.shape[-2:]:
        return F.interpolate(diff, size=x.shape[-2:])
    return diff


torch.fx.wrap("resize_like")


def fuse_difference(x: torch.Tensor, diff: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``alpha * x + beta * up(diff)``, ``up`` the nearest upsampling to ``x``'s size (official fusion)."""
    return alpha * x + beta * resize_like(diff, x)


class ShortTermTDM(nn.Module):
    """The difference stream of TDN's early stages.

    From the ``F`` frames of each segment, ``[B*T, F*3, H, W]``, the ``F-1`` differences of
    consecutive frames are stacked on channels, average-pooled 2x2 and passed through ``stem`` (a
    copy of the backbone's stem whose first conv takes ``(F-1)*3`` channels) and ``stage`` (a copy
    of the first stage). Returns both maps; the model fuses them into the RGB stream after its
    stem and after its first stage with :func:`fuse_difference`.

    Args:
        stem: the difference stem, input ``(F-1)*3`` channels.
        stage: the difference stream's first stage.
        num_segments: segments per clip (for the shape check).
        frames_per_segment: consecutive frames per segment (official: 5).
    """

    def __init__(self, stem: nn.Module, stage: nn.Module, num_segments: int, frames_per_segment: int = 5) -> None:
        super().__init__()
        if frames_per_segment < 2:
            raise ValueError(f"S-TDM needs at least 2 frames per segment, got {frames_per_segment}")
        self.num_segments = num_segments
        self.frames_per_segment = frames_per_segment
        self.stem = stem
        self.stage = stage

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        split_segments(frames, self.num_segments)  # shape check
        diff = F.avg_pool2d(frame_differences(frames, self.frames_per_segment), 2)
        stem_out = self.stem(diff)
        return stem_out, self.stage(stem_out)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, frames_per_segment={self.frames_per_segment}"
