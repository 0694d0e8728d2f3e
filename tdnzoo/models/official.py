"""Convert checkpoints of the official TDN (MCG-NJU/TDN) and TSM (mit-han-lab/temporal-shift-module).

Both save ``{'state_dict': {'module.base_model....': ...}, ...}``. The conversion is exact:

- TDN's backbone convolutions carry a bias followed by BatchNorm; ``BN(conv(x) + b)`` equals
  ``BN'(conv(x))`` with ``running_mean' = running_mean - b`` (in training the batch mean absorbs
  ``b`` too), so the biases fold into BN and a bias-free timm ResNet holds the weights.
- TDN's ``conv1_temp`` is registered but never used by the official forward: dropped.
- TSM wraps each shifted ``conv1`` as ``conv1.net``.
"""
from __future__ import annotations

import re

import torch

__all__ = ["detect_official_format", "convert_official", "convert_official_tdn", "convert_official_tsm"]

_LTDM_NAMES = {
    "conv1": "conv_reduce",
    "bn1": "bn_reduce",
    "conv2": "conv_neighbor",
    "conv3_smallscale2": "conv_pooled",
    "bn3_smallscale2": "bn_pooled",
    "conv3_smallscale4": "conv_full",
    "bn3_smallscale4": "bn_full",
    "conv3": "conv_expand",
    "bn3": "bn_expand",
}


def _strip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = value
    return out


def detect_official_format(state_dict: dict[str, torch.Tensor]) -> str | None:
    """``'tdn'``, ``'tsm'`` or ``None`` for a state_dict (with or without ``module.``)."""
    keys = list(_strip(state_dict))
    if not any(k.startswith("base_model.") for k in keys):
        return None
    if any(k.startswith("base_model.conv1_5.") or "_bak." in k for k in keys):
        return "tdn"
    return "tsm"


def _fold_conv_biases(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold every ``<x>.conv<k>.bias`` into ``<x>.bn<k>`` and ``downsample.0.bias`` into ``downsample.1``."""
    out = dict(sd)
    for key in list(sd):
        m = re.match(r"^(.*?)(conv(\d+)|downsample\.0)\.bias$", key)
        if not m or ".mse." in key:
            continue
        prefix, k = m.group(1), m.group(3)
        bn = f"{prefix}bn{k}" if k else f"{prefix}downsample.1"
        if f"{bn}.running_mean" not in sd:
            continue  # not followed by BatchNorm (not in any released model); keep it visible
        out[f"{bn}.running_mean"] = sd[f"{bn}.running_mean"] - sd[key]
        del out[key]
    return out


def convert_official_tdn(state_dict: dict[str, torch.Tensor], classifier: str = "fc") -> dict[str, torch.Tensor]:
    """Official TDN state_dict -> tdnzoo ``tdn_resnet50`` / ``tdn_resnet101`` keys."""
    sd = {k[len("base_model.") :] if k.startswith("base_model.") else k: v for k, v in _strip(state_dict).items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("conv1_temp.")}
    sd = _fold_conv_biases(sd)
    out = {}
    for key, value in sd.items():
        new = key
        if key.startswith("new_fc."):
            new = f"backbone.{classifier}." + key[len("new_fc.") :]
        elif key.startswith("conv1_5.0."):
            new = "short_term.stem.conv1." + key[len("conv1_5.0.") :]
        elif key.startswith("conv1_5.1."):
            new = "short_term.stem.bn1." + key[len("conv1_5.1.") :]
        elif key.startswith("resnext_layer1."):
            new = "short_term.stage." + key[len("resnext_layer1.") :]
        elif key.startswith(("conv1.", "bn1.")):
            new = "backbone." + key
        else:
            m = re.match(r"^layer(\d)_bak\.(\d+)\.(.*)$", key)
            if m:
                stage, block, rest = m.groups()
                prefix = f"backbone.layer{stage}.{block}."
                if rest.startswith("mse."):
                    name, _, leaf = rest[len("mse.") :].partition(".")
                    new = f"{prefix}conv2.temporal.ltdm.{_LTDM_NAMES.get(name, name)}.{leaf}"
                elif rest == "shift.conv.weight":
                    new = f"{prefix}conv2.temporal.tconv.weight"
                elif rest.startswith("conv2.") and stage != "1":
                    new = f"{prefix}conv2.inner." + rest[len("conv2.") :]
                else:
                    new = prefix + rest
        out[new] = value
    return out


def convert_official_tsm(
    state_dict: dict[str, torch.Tensor], target_keys: set[str] | None = None, classifier: str = "fc"
) -> dict[str, torch.Tensor]:
    """Official TSM state_dict -> tdnzoo ``tsm_<resnet>`` keys.

    The official ``conv1.net`` marks a shifted conv; tdnzoo's is ``conv1.inner``. With
    ``target_keys`` (the model's state_dict keys) a conv maps to whichever name the model has.
    """
    out = {}
    for key, value in _strip(state_dict).items():
        key = key[len("base_model.") :] if key.startswith("base_model.") else key
        if key.startswith("new_fc."):
            out[f"backbone.{classifier}." + key[len("new_fc.") :]] = value
            continue
        if key.startswith("fc."):  # dropout == 0 releases keep the head in the base model
            out[f"backbone.{classifier}." + key[len("fc.") :]] = value
            continue
        plain = "backbone." + key.replace(".net.", ".")
        shifted = "backbone." + key.replace(".net.", ".inner.")
        if target_keys is not None and plain not in target_keys and shifted not in target_keys:
            # conv1 of a block: shifted in the model but not in the checkpoint, or the reverse
            alt = re.sub(r"\.conv1\.weight$", ".conv1.inner.weight", plain)
            out[alt if alt in target_keys else plain] = value
        else:
            out[shifted if target_keys is None or shifted in target_keys else plain] = value
    return out


def convert_official(
    state_dict: dict[str, torch.Tensor], target_keys: set[str] | None = None, classifier: str = "fc"
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Convert an official TDN/TSM state_dict if it is one; returns ``(state_dict, format)``."""
    fmt = detect_official_format(state_dict)
    if fmt == "tdn":
        return convert_official_tdn(state_dict, classifier), fmt
    if fmt == "tsm":
        return convert_official_tsm(state_dict, target_keys, classifier), fmt
    return state_dict, None
