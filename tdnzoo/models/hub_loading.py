"""Reading what a model is built from: the ``config.json`` of a tdnzoo export (``hf-hub:`` /
``local-dir:``) and the weights file of a pretrained tag or an export.

This module only finds and reads; it hands back configs and paths, and
:func:`tdnzoo.create_model` builds the model and loads the weights (as timm's ``_hub`` serves
``_factory``). It never imports the factory.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .hub_download import WEIGHT_FILES, HubFileNotFoundError, HubUnreachableError, download_file, download_weights
from .pretrained import convert_hint, is_published
from .registry import split_tag

__all__ = [
    "CONFIG_NAME",
    "WeightsFile",
    "is_export_name",
    "load_export_cfg",
    "parse_export_name",
    "pretrained_weights_file",
    "read_export_config",
]

_log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
_EXPORT_PREFIXES = ("hf-hub:", "local-dir:")


@dataclass(frozen=True)
class WeightsFile:
    """A weights file to load, with what to check and what to say if it is damaged.

    Attributes:
        path: the file (in the Hub cache or a local folder).
        sha256: the hash it must have, when one is recorded.
        source: the name to report (``arch.tag (ORG/REPO)``, ``hf-hub:ORG/REPO``, ``local-dir:PATH``).
        fix: what to do when the file is damaged.
    """

    path: Path
    sha256: str | None
    source: str
    fix: str


def is_export_name(name: str) -> bool:
    """Whether ``name`` names a tdnzoo export (``hf-hub:ORG/REPO[@REV]`` or ``local-dir:PATH``)."""
    return name.startswith(_EXPORT_PREFIXES)


def parse_export_name(name: str) -> tuple[str, str, str | None]:
    """``'hf-hub:ORG/REPO@REV'`` -> ``('hf-hub', 'ORG/REPO', 'REV')``; ``'local-dir:PATH'`` -> ``('local-dir', PATH, None)``."""
    kind, sep, rest = name.partition(":")
    if not sep or kind not in ("hf-hub", "local-dir") or not rest:
        raise ValueError(f"expected 'hf-hub:ORG/REPO[@REVISION]' or 'local-dir:PATH', got '{name}'")
    if kind == "local-dir":
        return kind, os.path.expanduser(rest), None
    repo_id, _, revision = rest.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"expected 'hf-hub:ORG/REPO[@REVISION]', got '{name}': '{repo_id}' is not ORG/REPO")
    return kind, repo_id, revision or None


def read_export_config(name: str) -> tuple[dict[str, Any], Path]:
    """The ``config.json`` of a tdnzoo export and the folder holding it (the Hub snapshot or the local dir)."""
    kind, location, revision = parse_export_name(name)
    if kind == "hf-hub":
        path = download_file(location, CONFIG_NAME, revision=revision)
    else:
        path = Path(location) / CONFIG_NAME
        if not Path(location).is_dir():
            raise HubFileNotFoundError(f"{name}: no such folder")
        if not path.is_file():
            raise HubFileNotFoundError(
                f"{name}: no {CONFIG_NAME} in {location}; expected a folder written by tdnzoo.save_pretrained"
            )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{name}: cannot read {path} as JSON ({exc})") from exc
    missing = [k for k in ("architecture", "model_args") if k not in config]
    if missing:
        raise CheckpointError(
            f"{name}: {CONFIG_NAME} lacks {', '.join(missing)}; it is not a tdnzoo export "
            "(tdnzoo.save_pretrained writes architecture, model_args and pretrained_cfg)"
        )
    return config, path.parent


def load_export_cfg(name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(architecture, model_args, pretrained_cfg)`` of an export, as timm's ``load_model_config_from_hf``.

    ``model_args`` are the method options to build it with (without ``num_classes`` and
    ``num_segments``, which the cfg records as trained); the cfg's ``source`` is ``name``, which
    :func:`pretrained_weights_file` reads to find the weights.
    """
    config, _ = read_export_config(name)
    arch, _ = split_tag(str(config["architecture"]))
    model_args = dict(config.get("model_args") or {})
    classes = model_args.pop("num_classes", None) or config.get("num_classes")
    segments = model_args.pop("num_segments", None) or config.get("num_segments")
    cfg = dict(config.get("pretrained_cfg") or {})
    for key in ("input_size", "mean", "std", "paper_ids"):  # JSON made these lists
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    if config.get("label_names"):
        cfg["label_names"] = tuple(config["label_names"])
    if classes:
        cfg["num_classes"] = int(classes)
    if segments:
        cfg["num_segments"] = int(segments)
    kind, location, revision = parse_export_name(name)
    if kind == "hf-hub":
        cfg.update(hf_hub_id=location, hf_hub_revision=revision or "main")
    cfg["source"] = name
    return arch, model_args, cfg


def _weight_filenames(first: str | None) -> tuple[str, ...]:
    first = first or WEIGHT_FILES[0]
    return (first,) + tuple(f for f in WEIGHT_FILES if f != first)


def _cache_fix(repo_id: str) -> str:
    return f"Remove the damaged copy with `hf cache rm model/{repo_id}` and load again to download it afresh."


def _export_weights_file(name: str, cfg: dict[str, Any]) -> WeightsFile:
    kind, location, revision = parse_export_name(name)
    filename = cfg.get("hf_hub_filename") or WEIGHT_FILES[0]
    filenames = _weight_filenames(filename)
    if kind == "hf-hub":
        path = download_weights(location, revision=revision, filenames=filenames)
        fix = _cache_fix(location)
    else:
        found = [Path(location) / f for f in filenames if (Path(location) / f).is_file()]
        if not found:
            raise HubFileNotFoundError(f"{name}: no weights in {location} (expected one of {', '.join(filenames)})")
        path, fix = found[0], "Export it again with tdnzoo.save_pretrained."
    # The recorded hash is that of the file save_pretrained wrote, not of a fallback pickle.
    return WeightsFile(path, cfg.get("sha256") if path.name == filename else None, name, fix)


def pretrained_weights_file(cfg: dict[str, Any]) -> WeightsFile:
    """The weights of a pretrained tag or an export (the cfg's ``source``), downloaded through the Hub cache.

    Tags download ``cfg['hf_hub_id']`` at ``cfg['hf_hub_revision']`` (safetensors first).

    Raises:
        HubFileNotFoundError: the weights are neither on the Hub nor cached; for a tag not
            published yet the message says how to convert the official release locally.
        CheckpointError: the cfg says nowhere to download from.
    """
    source = cfg.get("source")
    if isinstance(source, str) and is_export_name(source):
        return _export_weights_file(source, cfg)
    name = f"{cfg.get('architecture')}.{cfg.get('tag')}"
    repo_id = cfg.get("hf_hub_id")
    if not repo_id:
        raise CheckpointError(f"{name} has no hf_hub_id: there is nowhere to download its weights from")
    filename = cfg.get("hf_hub_filename") or WEIGHT_FILES[0]
    try:
        path = download_weights(repo_id, revision=cfg.get("hf_hub_revision"), filenames=_weight_filenames(filename))
    except HubUnreachableError as exc:
        published = "" if is_published(cfg) else f" (if they are not on the Hub yet: {convert_hint(cfg)})"
        raise HubUnreachableError(f"cannot load the weights of {name}: {exc}{published}", exc.reason) from exc
    except HubFileNotFoundError as exc:
        if is_published(cfg):
            raise HubFileNotFoundError(
                f"cannot load the weights of {name}: {exc}. Connect once without HF_HUB_OFFLINE to download "
                f"them into the cache, or pass checkpoint_path= a local copy."
            ) from exc
        raise HubFileNotFoundError(
            f"the weights of {name} are not on the Hugging Face Hub yet ({exc}). {convert_hint(cfg)}"
        ) from exc
    expected = cfg.get("sha256") if path.name == filename else None
    if not expected:
        _log.warning("%s: no published sha256 for %s; loading it without a hash check", name, path.name)
    return WeightsFile(path, expected, f"{name} ({repo_id})", _cache_fix(repo_id))
