"""Per-family rules: where the generic placement (:mod:`tdnzoo.models.backbone`) is not the one to use.

Keyed by timm family (the module defining the model: ``resnet``, ``davit``, ...) and block class.
ResNet's rules pin the official TSM / TDN placement, which the generic rule also finds, so that no
change to the generic rule can move it. The others correct the generic rule where a block's first
op is on its main path rather than its residual branch. Families refused for TSM and TDN say why.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlacementRule", "placement_rule", "refusal"]


@dataclass(frozen=True)
class PlacementRule:
    """Ops of a block (attribute paths inside it) that the shift and the L-TDM go at.

    ``after``: on the op's output rather than its input.
    """

    shift: str
    difference: str
    after: bool = False


_RULES: dict[tuple[str, str], PlacementRule] = {
    # Official TSM (mit-han-lab, "blockres"): before conv1; official TDN (MCG-NJU): L-TDM and the
    # temporal conv before the 3x3 conv2 of a Bottleneck, before conv1 of a BasicBlock.
    ("resnet", "Bottleneck"): PlacementRule("conv1", "conv2"),
    ("resnet", "BasicBlock"): PlacementRule("conv1", "conv1"),
    # DaViT blocks begin with a positional conv on the main path (x + conv(x)); the residual
    # branch starts at norm1, whose output the attention takes (in windows, for SpatialBlock).
    ("davit", "SpatialBlock"): PlacementRule("norm1", "norm1", after=True),
    ("davit", "ChannelBlock"): PlacementRule("norm1", "norm1", after=True),
}

_REFUSED: dict[str, str] = {
    "nest": (
        "its transformer layers see each level's map as separate square blocks stacked on a dimension of "
        "their own ([N, blocks, tokens, C]), not as one per-frame map; only a whole level could take a "
        "temporal module"
    ),
    "tnt": (
        "its blocks carry two token streams (pixel tokens inside each patch and patch tokens) as separate "
        "arguments; neither reaches a block's ops as one per-frame map"
    ),
}


def placement_rule(family: str, block_class: str) -> PlacementRule | None:
    """The rule for a block of ``block_class`` in a model of timm family ``family``, if there is one."""
    return _RULES.get((family, block_class))


def refusal(family: str) -> str | None:
    """Why TSM and TDN refuse a timm family (TSN takes any backbone), or ``None``."""
    return _REFUSED.get(family)
