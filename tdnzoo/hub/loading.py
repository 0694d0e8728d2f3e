"""Loading pretrained weights: tags (``arch.tag``) and tdnzoo exports (``hf-hub:`` / ``local-dir:``)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import load_checkpoint
from ..errors import CheckpointError, CheckpointMismatchError
from ..pretrained import apply_pretrained_cfg, convert_hint, is_published, reset_pretrained_head
from .download import WEIGHT_FILES, HubFileNotFoundError, download_file, download_weights

__all__ = ["create_from_export", "load_pretrained_weights", "parse_export_name", "read_export_config"]

_log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"


def _load_weights(model: nn.Module, path: Path, *, sha256: str | None, source: str, fix: str) -> None:
    """``load_checkpoint`` with the source named, and what to do when the file is damaged."""
    try:
        load_checkpoint(model, path, sha256=sha256)
    except CheckpointMismatchError:
        raise  # lists the keys; the file itself is fine
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}. {fix}") from exc


def _cache_fix(repo_id: str) -> str:
    return f"Remove the damaged copy with `hf cache rm model/{repo_id}` and load again to download it afresh."


def _weight_filenames(first: str | None) -> tuple[str, ...]:
    first = first or WEIGHT_FILES[0]
    return (first,) + tuple(f for f in WEIGHT_FILES if f != first)


def load_pretrained_weights(model: nn.Module, cfg: dict[str, Any]) -> None:
    """Load the weights of a pretrained tag into ``model`` (built with the tag's classes), strictly.

    Downloads ``cfg['hf_hub_id']`` at ``cfg['hf_hub_revision']`` through the Hub cache (safetensors
    first), checks ``cfg['sha256']`` when it is known.

    Raises:
        HubFileNotFoundError: the weights are neither on the Hub nor cached; for a tag not
            published yet the message says how to convert the official release locally.
        CheckpointError: a damaged file or a hash mismatch, with what to do.
    """
    name = f"{cfg.get('architecture')}.{cfg.get('tag')}"
    repo_id = cfg.get("hf_hub_id")
    if not repo_id:
        raise CheckpointError(f"{name} has no hf_hub_id: there is nowhere to download its weights from")
    revision = cfg.get("hf_hub_revision")
    filename = cfg.get("hf_hub_filename") or WEIGHT_FILES[0]
    try:
        path = download_weights(repo_id, revision=revision, filenames=_weight_filenames(filename))
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
    _load_weights(model, path, sha256=expected, source=f"{name} ({repo_id})", fix=_cache_fix(repo_id))


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


def _export_weights(name: str, folder: Path, cfg: dict[str, Any]) -> Path:
    kind, location, revision = parse_export_name(name)
    filenames = _weight_filenames(cfg.get("hf_hub_filename"))
    if kind == "hf-hub":
        return download_weights(location, revision=revision, filenames=filenames)
    for filename in filenames:
        if (folder / filename).is_file():
            return folder / filename
    raise HubFileNotFoundError(f"{name}: no weights in {folder} (expected one of {', '.join(filenames)})")


def create_from_export(
    name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    num_segments: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the model a tdnzoo export describes (``hf-hub:ORG/REPO[@REV]`` or ``local-dir:PATH``).

    ``config.json`` gives the architecture and model arguments; ``pretrained=True`` loads its
    weights strictly (checking the sha256 it records). A different ``num_classes`` keeps the
    backbone and resets the classifier, with a log line.

    Example:
        >>> model = create_from_export('local-dir:./tdn_resnet50.sthv1_8f', pretrained=True)
    """
    from ..models.factory import create_model
    from ..models.registry import split_tag

    config, folder = read_export_config(name)
    arch, _ = split_tag(str(config["architecture"]))
    model_args = dict(config.get("model_args") or {})
    trained = int(model_args.pop("num_classes", None) or config.get("num_classes") or 0)
    export_segments = model_args.pop("num_segments", None) or config.get("num_segments")
    if num_segments is None and export_segments is not None:
        num_segments = int(export_segments)
    build_classes = trained if pretrained else (num_classes if num_classes is not None else trained)
    try:
        model = create_model(arch, num_classes=build_classes, num_segments=num_segments, **{**model_args, **kwargs})
    except TypeError as exc:
        raise CheckpointError(
            f"{name}: the model arguments in {CONFIG_NAME} ({', '.join(sorted(model_args))}) do not fit this "
            f"tdnzoo version: {exc}. Upgrade tdnzoo or re-export the model."
        ) from exc

    cfg = dict(config.get("pretrained_cfg") or {})
    for key in ("input_size", "mean", "std", "paper_ids"):  # JSON made these lists
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    if config.get("label_names"):
        cfg["label_names"] = tuple(config["label_names"])
    kind, location, revision = parse_export_name(name)
    if kind == "hf-hub":
        cfg.update(hf_hub_id=location, hf_hub_revision=revision or "main")
    cfg["source"] = name
    apply_pretrained_cfg(model, cfg)

    if pretrained:
        weights = _export_weights(name, folder, cfg)
        expected = cfg.get("sha256") if weights.name == (cfg.get("hf_hub_filename") or WEIGHT_FILES[0]) else None
        fix = _cache_fix(location) if kind == "hf-hub" else "Export it again with tdnzoo.save_pretrained."
        _load_weights(model, weights, sha256=expected, source=name, fix=fix)
        if num_classes is not None and num_classes != trained:
            reset_pretrained_head(model, name, trained, num_classes)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model
