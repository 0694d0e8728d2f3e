"""What kind of op a module is: norm, spatial op, token mixer, shortcut, reparameterizable, block-like.

Small predicates on module types and names that the placement rules in
:mod:`tdnzoo.models.backbone` are written with.
"""
from __future__ import annotations

import re
from collections.abc import Collection

from torch import nn

__all__ = [
    "SHORTCUT",
    "is_container",
    "is_mixing_op",
    "is_no_op",
    "is_norm",
    "is_reparameterizable",
    "is_spatial_leaf",
    "is_token_mixer",
    "is_unit",
    "mixes_positions",
]

# Children of a block that form its shortcut, not its residual branch (timm's names).
SHORTCUT = re.compile(r"^(shortcut|downsample|skip|identity|res_conv|conv_shortcut|skip_path|short_cut)$")
# Token mixers that are not spatial convs: attention, pooling, recurrent, state-space and gating mixers.
_TOKEN_MIXER = re.compile(
    r"(Attention|Attn|MHSA|MultiHead|MLA|XCA|Pooling|Mixer|Modulation|SpatialGating|LSTM|RNN|SSM|Mamba)"
)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _weighted(module: nn.Module) -> int:
    """Convolutions and linear layers (modules owning a weight of two or more dimensions) in a subtree."""
    return sum(1 for m in module.modules() if getattr(m, "weight", None) is not None and m.weight.dim() >= 2)


def is_no_op(module: nn.Module) -> bool:
    """Identity, dropout and drop-path: the same map in eval, not an op to place anything at."""
    return isinstance(module, (nn.Identity, nn.Dropout, nn.Dropout2d)) or type(module).__name__ in ("DropPath", "DropBlock2d")


def is_container(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer (with or without a fused activation), including timm's own classes."""
    if isinstance(module, _NORMS):
        return True
    return "Norm" in type(module).__name__ and _weighted(module) == 0


def is_spatial_leaf(module: nn.Module) -> bool:
    """A 2D convolution or pooling with a kernel wider than one pixel: an op that mixes positions."""
    if next(module.children(), None) is not None:
        return False
    if isinstance(module, nn.Conv2d):
        return max(module.kernel_size) > 1
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        kernel = module.kernel_size
        return (max(kernel) if isinstance(kernel, (tuple, list)) else kernel) > 1
    return False


def is_token_mixer(module: nn.Module, attention: Collection[int] = ()) -> bool:
    """A module that mixes positions by other means than one convolution: attention, pooling, ...

    By class name, or because a dry run saw it compute an attention (``attention``: module ids,
    :attr:`tdnzoo.models.probe.Trace.attention`).
    """
    if is_container(module):
        return False
    return bool(_TOKEN_MIXER.search(type(module).__name__)) or id(module) in attention


def is_mixing_op(module: nn.Module, attention: Collection[int] = ()) -> bool:
    """An op that mixes positions: a spatial conv or pooling, or a token mixer holding no other token mixer
    (an attention is an op; a block named ``...Attention`` that holds one is not)."""
    if is_spatial_leaf(module):
        return True
    return is_token_mixer(module, attention) and not any(
        is_token_mixer(m, attention) for m in module.modules() if m is not module
    )


def mixes_positions(module: nn.Module, attention: Collection[int] = ()) -> bool:
    return any(is_spatial_leaf(m) or is_token_mixer(m, attention) for m in module.modules())


def is_unit(module: nn.Module, attention: Collection[int] = ()) -> bool:
    """A block candidate: not a plain container nor a mixing op itself, with two or more weighted ops,
    one of them mixing positions."""
    return (
        next(module.children(), None) is not None
        and not is_container(module)
        and not is_mixing_op(module, attention)
        and _weighted(module) >= 2
        and mixes_positions(module, attention)
    )


def is_reparameterizable(module: nn.Module) -> bool:
    """timm's ``reparameterize_model`` rebuilds this module's internals (RepVGG, MobileOne, FastViT, ...)."""
    return any(hasattr(module, name) for name in ("reparameterize", "fuse", "switch_to_deploy"))
