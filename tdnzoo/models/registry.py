"""Model names: ``<method>_<timm backbone>[.<pretrained tag>]``, e.g. ``tdn_resnet50.sthv1_8f``.

Any timm 2D backbone (CNN, hybrid or vision transformer) works as ``<backbone>`` without registration;
``COMMON_BACKBONES`` are the ones ``list_models`` shows, and a pattern with a wildcard after the method
prefix (``'tdn_vit*'``) matches every timm name. Pretrained tags are registered in :mod:`tdnzoo.models.pretrained`.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache

from ..errors import UnknownModelError
from .methods import METHODS, is_method
from .pretrained import pretrained_names

__all__ = [
    "COMMON_BACKBONES",
    "COMMON_CNNS",
    "COMMON_HYBRIDS",
    "COMMON_TRANSFORMERS",
    "list_models",
    "list_pretrained",
    "parse_model_name",
    "split_tag",
]

# What ``list_models`` shows without a wildcard, by kind (as the family table of docs/backbones.md
# classes them: a CNN mixes positions with convolutions, a transformer with token mixers, a hybrid
# with both); each one's family passes TSN, TSM and TDN there.
COMMON_CNNS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
    "seresnext50_32x4d", "regnety_002", "regnety_008", "regnety_016", "regnety_032", "convnext_atto",
    "convnext_nano", "convnext_tiny", "convnext_small", "efficientnet_b0", "efficientnet_b3", "efficientnetv2_rw_t",
    "mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv4_conv_small", "mnasnet_100", "ghostnet_100",
)
COMMON_HYBRIDS = (
    "coatnet_0_rw_224", "maxvit_tiny_tf_224", "efficientformerv2_s0", "fastvit_t8", "levit_128s", "mobilevit_s",
    "efficientvit_b1", "edgenext_small", "pvt_v2_b1", "tiny_vit_5m_224", "mvitv2_tiny",
)
COMMON_TRANSFORMERS = (
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_small_patch16_224",
    "deit3_small_patch16_224", "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224",
    "swin_base_patch4_window7_224", "swinv2_tiny_window8_256", "beit_base_patch16_224", "eva02_tiny_patch14_224",
    "caformer_s18", "poolformerv2_s12", "twins_svt_small", "hiera_tiny_224",
)
COMMON_BACKBONES = COMMON_CNNS + COMMON_HYBRIDS + COMMON_TRANSFORMERS


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
    if not sep or not is_method(method):
        close = difflib.get_close_matches(method.lower(), list(METHODS), n=1)
        hint = f" Did you mean '{close[0]}_{backbone}'?" if close and sep else ""
        raise UnknownModelError(
            f"Unknown model '{name}': unknown method prefix '{method}', expected one of {', '.join(METHODS)}, "
            "optionally composed with +BLOCK / -BLOCK (names are '<method>_<timm backbone>[.<tag>]', e.g. "
            f"'tdn_resnet50', 'tsn+stdm_resnet50').{hint}"
        )
    if not timm.is_model(backbone):
        pool = list(COMMON_BACKBONES) + list(_timm_names())
        close = difflib.get_close_matches(backbone, pool, n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(f'{method}_{c}' for c in dict.fromkeys(close))}." if close else ""
        raise UnknownModelError(
            f"Unknown model '{name}': '{backbone}' is not a timm model.{hint} "
            "`tdnzoo list` shows common names; any timm 2D backbone name works after the method prefix "
            "(`tdnzoo list 'tdn_vit*'` lists timm's ViTs)."
        )
    return method.lower(), backbone, tag


def _patterns(value: str | Iterable[str]) -> list[str]:
    return [v for v in ([value] if isinstance(value, str) else list(value)) if v]


def _with_tags(patterns: list[str]) -> list[str]:
    # As timm: with tags listed, a pattern without a tag also matches the tagged names.
    return [q for p in patterns for q in ((p,) if "." in p else (p, f"{p}.*"))]


def _is_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _timm_matches(pattern: str) -> set[str]:
    """Every ``<method>_<timm name>`` that a wildcard pattern matches, its method part and its timm part
    matched apart (``'tdn_vit*'``: TDN on each timm name starting with ``vit``). Families that refuse a
    method are left out for it."""
    from .families import refusal

    method_part, sep, backbone_part = pattern.partition("_")
    if not sep or not backbone_part or not _is_wildcard(pattern):
        return set()
    methods = [m for m in METHODS if fnmatch.fnmatch(m, method_part)]
    backbones = [b for b in _timm_names() if fnmatch.fnmatch(b, backbone_part)] if methods else []
    refused = {b for b in backbones if refusal(_timm_family(b))}
    return {f"{m}_{b}" for m in methods for b in backbones if m == "tsn" or b not in refused}


@lru_cache(maxsize=1)
def _timm_families() -> dict[str, str]:
    import timm

    return {name: module for module in timm.list_modules() for name in timm.list_models(module=module)}


def _timm_family(name: str) -> str:
    return _timm_families().get(name, "")


def _in_modules(arch: str, modules: list[str]) -> bool:
    """The arch's method is one of ``modules``, or its backbone is in one of those timm modules."""

    method, _, backbone = arch.partition("_")
    if method in modules:
        return True
    return any(backbone in _timm_module_models(m) for m in modules if m not in METHODS)


@lru_cache(maxsize=64)
def _timm_module_models(module: str) -> frozenset[str]:
    import timm

    return frozenset(timm.list_models(module=module))


def list_models(
    filter: str | Iterable[str] = "",
    module: str | Iterable[str] = "",
    pretrained: bool = False,
    exclude_filters: str | Iterable[str] = "",
    name_matches_cfg: bool = False,
    include_tags: bool | None = None,
) -> list[str]:
    """Model names, naturally sorted, with timm's keywords.

    Args:
        filter: pattern(s) such as ``'tdn_*'`` (fnmatch wildcards); a pattern with a wildcard after the
            method prefix matches every timm name (``'tdn_vit*'``: TDN on each of timm's ViTs); a pattern
            without a wildcard matches the common names containing it. Empty lists the common names.
        module: method(s) (``'tdn'``) or timm module(s) of the backbone (``'resnet'``, ``'convnext'``).
        pretrained: only names with pretrained weights.
        exclude_filters: pattern(s) to drop.
        name_matches_cfg: accepted for timm's signature; tdnzoo has no aliases, so every name matches.
        include_tags: list ``arch.tag`` names of the pretrained weights (archs without any stay
            plain); default: ``pretrained``.

    Example:
        >>> list_models('tdn_resnet*')[:2]
        ['tdn_resnet18', 'tdn_resnet34']
        >>> list_models(module='tsm', pretrained=True, include_tags=False)
        ['tsm_resnet50']
    """
    del name_matches_cfg
    if include_tags is None:
        include_tags = pretrained
    tagged = pretrained_names()
    with_weights = {split_tag(n)[0] for n in tagged}
    archs = {f"{m}_{b}" for m in METHODS for b in COMMON_BACKBONES} | with_weights
    archs |= {name for pattern in _patterns(filter) for name in _timm_matches(split_tag(pattern)[0])}
    modules = _patterns(module)
    if modules:
        archs = {a for a in archs if _in_modules(a, modules)}
    if pretrained:
        archs &= with_weights
    names = set(archs)
    filters, excludes = _patterns(filter), _patterns(exclude_filters)
    if include_tags:
        names = {n for n in tagged if split_tag(n)[0] in archs} | (archs - with_weights)
        filters, excludes = _with_tags(filters), _with_tags(excludes)
    if filters:
        names = {n for n in names if any(fnmatch.fnmatch(n, f if "*" in f or "?" in f else f"*{f}*") for f in filters)}
    for ex in excludes:
        names = {n for n in names if not fnmatch.fnmatch(n, ex)}
    return sorted(names, key=_natural_key)


def list_pretrained(filter: str | Iterable[str] = "", exclude_filters: str | Iterable[str] = "") -> list[str]:
    """``arch.tag`` names with pretrained weights, matching ``filter`` (fnmatch), naturally sorted.

    Example:
        >>> list_pretrained('tsm_*')[:2]
        ['tsm_resnet50.k400_8f', 'tsm_resnet50.sthv1_8f']
    """
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters)
