"""Pretrained configs: one metadata record per released weight, named ``arch.tag``."""
from __future__ import annotations

from typing import Any

from torch import nn

from .errors import UnknownModelError

__all__ = ["PRETRAINED_CFGS", "get_pretrained_cfg", "list_pretrained", "load_pretrained", "pretrained_names"]

# arch.tag -> metadata. Filled by the pretrained-weights work (see issue on the Hub).
PRETRAINED_CFGS: dict[str, dict[str, Any]] = {}


def pretrained_names() -> list[str]:
    return list(PRETRAINED_CFGS)


def list_pretrained(filter: str = "") -> list[str]:
    """``arch.tag`` names with pretrained weights, matching ``filter`` (fnmatch)."""
    from .models.registry import list_models

    return list_models(filter, pretrained=True)


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """The metadata of ``arch.tag``; an architecture alone resolves to its default (first) tag."""
    arch, _, tag = name.partition(".")
    if tag:
        full = f"{arch}.{tag}"
        if full not in PRETRAINED_CFGS:
            tags = [n.partition(".")[2] for n in PRETRAINED_CFGS if n.startswith(arch + ".")]
            known = ", ".join(tags) if tags else "none"
            raise UnknownModelError(f"Invalid pretrained tag ({tag}) for {arch}. Known tags: {known}.")
        return dict(PRETRAINED_CFGS[full])
    for key, cfg in PRETRAINED_CFGS.items():
        if key.startswith(arch + "."):
            return dict(cfg)
    raise UnknownModelError(f"No pretrained weights for {arch}. `tdnzoo list --pretrained` lists them.")


def load_pretrained(model: nn.Module, cfg: dict[str, Any]) -> None:
    """Download (through the Hub cache) and load a tag's weights strictly."""
    from .hub import load_pretrained_weights

    load_pretrained_weights(model, cfg)
