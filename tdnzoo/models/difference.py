"""TDN's short-term difference stream on any backbone: a copy of its stem (and first stage) on frame differences.

The official S-TDM runs the 4 differences of a segment's 5 frames (12 channels) through a copy of
ResNet's stem whose first conv takes 12 channels, initialised with the RGB conv's weight averaged
over its 3 inputs and repeated, and through a copy of ``layer1``. Here the stem is whatever chain
of modules leads from the frames to the first stage (:mod:`tdnzoo.models.backbone`), so the convs
to adapt are found by running the copy: every convolution that receives the input itself (one in
a plain stem; each branch of a reparameterizable multi-branch stem such as MobileOne's). Where the
input first meets something else (a space-to-depth, a padding module), a 1x1 conv from the
differences to 3 channels, all weights 1/3, goes first: the same function at initialisation as the
averaged weights (``sum_c W[o, c] / 3`` for every difference channel), with the stem kept as it is.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..layers import ShortTermTDM
from .backbone import BackboneLayout
from .probe import fingerprint_of, trace_forward
from .tokens import FromMaps, ToMaps

__all__ = ["FirstOutput", "difference_stem", "short_term_stream"]


class FirstOutput(nn.Module):
    """Runs ``inner`` and keeps the first of the tensors it returns (a patch embedding's tokens)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def _relax_input_size(module: nn.Module) -> None:
    """Let copied patch embeddings take the half-size difference frames: timm checks the size
    otherwise, and pads to a multiple of the patch size only when asked."""
    for m in module.modules():
        if getattr(m, "strict_img_size", None) is True:
            m.strict_img_size = False
        if getattr(m, "dynamic_img_pad", None) is False:
            m.dynamic_img_pad = True


def _adapt_input_convs(stem: nn.Module, channels: int, size: int) -> bool:
    """Give every conv that receives the stem's input ``channels`` inputs (official init); ``False`` if not all are convs."""
    x = torch.zeros(1, 3, size, size)
    trace = trace_forward(stem, stem, x)
    first = [c for c in trace.calls if c.is_leaf and c.consumes(x, fingerprint_of(x))]
    if not first or not all(isinstance(c.module, nn.Conv2d) for c in first):
        return False
    convs = [c.module for c in first]
    if any(conv.in_channels != 3 or conv.groups != 1 for conv in convs):
        return False
    for call in first:
        conv = call.module
        weight = conv.weight.detach().mean(dim=1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
        conv.weight = nn.Parameter(weight)
        conv.in_channels = channels
        # Reparameterizable blocks (MobileOne, FastViT) rebuild their conv from a stored input width.
        owner = call.parent
        while owner is not None:
            for attr in ("in_chs", "in_chans", "in_channels"):
                if getattr(owner.module, attr, None) == 3:
                    setattr(owner.module, attr, channels)
            owner = owner.parent
    return True


def difference_stem(layout: BackboneLayout, frames_per_segment: int) -> nn.Sequential:
    """A copy of the backbone's stem taking the ``(F-1)*3`` difference channels, norms reset.

    Names follow the backbone's (``conv1``, ``bn1``, ... for ResNet; dots become underscores). Its
    norm layers start fresh, as the official ``conv1_5`` has a new BatchNorm.
    """
    parts = OrderedDict()
    for path, module in layout.stem:
        copied = copy.deepcopy(module)
        parts[path.replace(".", "_")] = FirstOutput(copied) if path in layout.tuple_outputs else copied
    stem = nn.Sequential(parts)
    _relax_input_size(stem)
    channels = 3 * (frames_per_segment - 1)
    if not _adapt_input_convs(stem, channels, max(8, layout.size // 2)):
        project = nn.Conv2d(channels, 3, 1, bias=False)
        nn.init.constant_(project.weight, 1.0 / 3.0)
        stem = nn.Sequential(OrderedDict([("to_rgb", project), *stem.named_children()]))
    for m in stem.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.reset_parameters()
    return stem


def short_term_stream(layout: BackboneLayout, num_segments: int, frames_per_segment: int) -> ShortTermTDM:
    """The S-TDM: the difference stem and, where the backbone has a first stage at reduction 4, its copy.

    Both return ``[N, C, h, w]`` maps whatever layout the backbone uses there (channels-last,
    tokens): the copies are framed by :class:`ToMaps` / :class:`FromMaps` where it is another.
    """
    stem = difference_stem(layout, frames_per_segment)
    stem_layout = layout.fusion_points[0].layout
    if stem_layout.kind != "nchw":
        stem = nn.Sequential(stem, ToMaps(stem_layout))
    stage: nn.Module = nn.Identity()
    if layout.first_stage is not None:
        stage = copy.deepcopy(layout.first_stage[1])
        _relax_input_size(stage)
        stage_layout = layout.fusion_points[1].layout
        if stem_layout.kind != "nchw" or stage_layout.kind != "nchw":
            stage = nn.Sequential(FromMaps(stem_layout), stage, ToMaps(stage_layout))
    return ShortTermTDM(stem, stage, num_segments, frames_per_segment)
