"""Model names: ``<method>_<timm backbone>[.<pretrained tag>]``, e.g. ``tdn_resnet50.sthv1_8f``.

Any timm 2D CNN works as ``<backbone>`` without registration; ``COMMON_BACKBONES`` are the ones
``list_models`` shows. Pretrained tags are registered in :mod:`tdnzoo.models.pretrained`.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from functools import lru_cache

from ..errors import UnknownModelError
from .pretrained import pretrained_names
from .video import METHODS

__all__ = ["COMMON_BACKBONES", "list_models", "list_pretrained", "parse_model_name", "split_tag"]

COMMON_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "seresnext50_32x4d",
    "regnety_002",
    "regnety_008",
    "regnety_016",
    "regnety_032",
    "convnext_atto",
    "convnext_nano",
    "convnext_tiny",
    "convnext_small",
    "efficientnet_b0",
    "efficientnet_b3",
    "efficientnetv2_rw_t",
    "mobilenetv3_small_050",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "mnasnet_100",
    "ghostnet_100",
)


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name.lower())]


def split_tag(name: str) -> tuple[str, str | None]:
    """``'tdn_resnet50.sthv1_8f'`` -> ``('tdn_resnet50', 'sthv1_8f')``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


@lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def parse_model_name(name: str) -> tuple[str, str, str | None]:
    """Split a name into ``(method, backbone, tag)``, checking method and backbone.

    Raises:
        UnknownModelError: an unknown method prefix or timm backbone, with close names.
    """
    import timm

    arch, tag = split_tag(name)
    method, sep, backbone = arch.partition("_")
    if not sep or method.lower() not in METHODS:
        close = difflib.get_close_matches(method.lower(), METHODS, n=1)
        hint = f" Did you mean '{close[0]}_{backbone}'?" if close and sep else ""
        raise UnknownModelError(
            f"Unknown model '{name}': unknown method prefix '{method}', expected one of {', '.join(METHODS)} "
            f"(names are '<method>_<timm backbone>[.<tag>]', e.g. 'tdn_resnet50').{hint}"
        )
    if not timm.is_model(backbone):
        pool = list(COMMON_BACKBONES) + list(_timm_names())
        close = difflib.get_close_matches(backbone, pool, n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(f'{method}_{c}' for c in dict.fromkeys(close))}." if close else ""
        raise UnknownModelError(
            f"Unknown model '{name}': '{backbone}' is not a timm model.{hint} "
            "`tdnzoo list` shows common names; any timm 2D CNN name works after the method prefix."
        )
    return method.lower(), backbone, tag


def list_models(
    filter: str | list[str] = "", pretrained: bool = False, exclude_filters: str | list[str] = ""
) -> list[str]:
    """Model names, naturally sorted, matching ``filter`` (fnmatch wildcards, like timm).

    Args:
        filter: pattern(s) such as ``'tdn_*'`` or ``'*resnet*'``; empty lists all.
        pretrained: list ``arch.tag`` names that have pretrained weights instead.
        exclude_filters: pattern(s) to drop.

    Example:
        >>> list_models('tdn_resnet*')[:2]
        ['tdn_resnet18', 'tdn_resnet34']
    """
    if pretrained:
        names = pretrained_names()
    else:
        names = [f"{m}_{b}" for m in METHODS for b in COMMON_BACKBONES]
    filters = [filter] if isinstance(filter, str) else list(filter)
    excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    if any(filters):
        names = [n for n in names if any(fnmatch.fnmatch(n, f if "*" in f or "?" in f else f"*{f}*") for f in filters if f)]
    for ex in excludes:
        if ex:
            names = [n for n in names if not fnmatch.fnmatch(n, ex)]
    return sorted(set(names), key=_natural_key)


def list_pretrained(filter: str | list[str] = "", exclude_filters: str | list[str] = "") -> list[str]:
    """``arch.tag`` names with pretrained weights, matching ``filter`` (fnmatch), naturally sorted.

    Example:
        >>> list_pretrained('tsm_*')[:2]
        ['tsm_resnet50.k400_8f', 'tsm_resnet50.sthv1_8f']
    """
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters)
