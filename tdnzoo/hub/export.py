"""Writing a model as a Hub-ready folder (``save_pretrained``) and uploading it (``push_to_hub``)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..models.checkpoint import save_weights, sha256_of
from ..models.description import DESCRIPTION_KEY, describe_model
from ..version import __version__
from .card import render_model_card

__all__ = ["export_config", "push_to_hub", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to config.json")


def _model_name(cfg: dict[str, Any]) -> str:
    arch = cfg.get("architecture") or "model"
    return f"{arch}.{cfg['tag']}" if cfg.get("tag") else arch


def export_config(model: nn.Module, *, sha256: str | None = None, repo_id: str | None = None) -> dict[str, Any]:
    """The ``config.json`` of an export: architecture, model arguments, labels and pretrained cfg."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if "architecture" not in cfg:
        raise ValueError("the model has no pretrained_cfg['architecture']; build it with tdnzoo.create_model")
    labels = cfg.pop("label_names", None)
    if labels is not None and len(labels) != model.num_classes:
        labels = None
    cfg.pop("source", None)  # where this process loaded it from: not a property of the export
    cfg.update(num_classes=model.num_classes, num_segments=model.num_segments, hf_hub_filename=WEIGHTS_NAME)
    cfg["sha256"] = sha256
    if repo_id:
        cfg.update(hf_hub_id=repo_id, hf_hub_revision="main")
    return _jsonable({
        "architecture": cfg["architecture"],
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "num_segments": model.num_segments,
        "frames_per_segment": model.frames_per_segment,
        "label_names": list(labels) if labels is not None else None,
        # Class names and clip settings in one place, as training checkpoints and ONNX files hold them.
        DESCRIPTION_KEY: describe_model(model).to_dict(),
        "model_args": dict(model.model_args),
        "pretrained_cfg": cfg,
        "tdnzoo_version": __version__,
    })


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    model_card: bool = True,
    card_template: str | os.PathLike | None = None,
    card_context: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and a ``README.md`` model card to ``directory``.

    The folder loads back with ``create_model('local-dir:DIR', pretrained=True)``, or, once
    uploaded, ``create_model('hf-hub:ORG/REPO', pretrained=True)``. ``config.json`` records the
    architecture, ``model.model_args``, the label names and the pretrained cfg (with the
    weights' sha256); the card is generated from the pretrained cfg.

    Args:
        model: a tdnzoo model (from ``create_model`` / ``temporalize``).
        directory: the folder to write (created if needed).
        repo_id: the Hub repository it will be uploaded to (shown in the card's usage).
        model_card: write ``README.md``.
        card_template: a Jinja template for the card (default: tdnzoo's generic card).
        card_context: more template variables.

    Example:
        >>> model = tdnzoo.create_model('tdn_resnet18', num_classes=10, num_segments=4)
        >>> tdnzoo.save_pretrained(model, 'my_tdn', repo_id='me/my_tdn')
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = save_weights(model, directory / WEIGHTS_NAME, {
        "tdnzoo_version": __version__, DESCRIPTION_KEY: describe_model(model).to_dict()})
    config = export_config(model, sha256=sha256_of(weights), repo_id=repo_id)
    _write_text(directory / "config.json", json.dumps(config, indent=2) + "\n")
    if model_card:
        write_model_card(config, directory, template_path=card_template, **(card_context or {}))
    return directory


def write_model_card(config: dict[str, Any], directory: str | os.PathLike, *,
                     template_path: str | os.PathLike | None = None, **context: Any) -> Path:
    """Render the card of an export's ``config`` to ``directory/README.md``."""
    cfg = dict(config["pretrained_cfg"])
    cfg["label_names"] = config.get("label_names")
    cfg["frames_per_segment"] = config.get("frames_per_segment", cfg.get("frames_per_segment"))
    card = render_model_card(cfg, template_path=template_path, **context)
    path = Path(directory) / "README.md"
    _write_text(path, str(card))
    return path


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> Any:
    """Upload an export folder: ``create_repo(exist_ok=True)`` then ``upload_folder``.

    Returns the ``CommitInfo`` of the upload.

    Example:
        >>> push_to_hub('my_tdn', 'me/my_tdn', token=os.environ['HF_TOKEN'])
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: write it with tdnzoo.save_pretrained first")
    api = HfApi(token=token, library_name="tdnzoo", library_version=__version__)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload {repo_id} with tdnzoo {__version__}",
        ignore_patterns=["*.tmp"],
    )
