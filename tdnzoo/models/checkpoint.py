"""Reading, checking and writing weights: safetensors first, pickles only with ``weights_only=True``."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointMismatchError
from .official import convert_official

__all__ = ["load_checkpoint", "read_state_dict", "save_weights", "sha256_of", "check_sha256", "classifier_name"]

_log = logging.getLogger(__name__)
_PICKLE_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt", ".pkl")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str | None) -> None:
    """Raise :class:`CheckpointError` when ``path`` does not hash to ``expected`` (if given)."""
    if not expected:
        return
    actual = sha256_of(path)
    if actual.lower() != expected.lower():
        raise CheckpointError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}: the file is corrupt, "
            "truncated or not the one recorded"
        )


def _reason(exc: BaseException) -> str:
    """The first line of a reader's error: torch's unpickler explains itself over many lines."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(f"{path} holds no state_dict (expected tensors, or a dict with 'state_dict' or 'model')")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights from a file; returns ``(state_dict, metadata)``.

    ``.safetensors`` files load without unpickling; anything else goes through
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({_reason(exc)}); it is corrupt or truncated: "
                "delete it and download or convert it again"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True) ({_reason(exc)}). "
            "tdnzoo does not unpickle arbitrary objects; if you trust the file, convert it to "
            "safetensors yourself, or it may be corrupt or truncated"
        ) from exc
    return _unwrap(obj, path), {}


def classifier_name(model: nn.Module) -> str:
    """Module path of the backbone's classifier, e.g. ``fc`` or ``head.fc``."""
    backbone = getattr(model, "backbone", model)
    name = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(name, str):
        return name
    classifier = backbone.get_classifier()
    for path, module in backbone.named_modules():
        if module is classifier:
            return path
    return "fc"


def _summarise(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_fit(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if not (missing or unexpected or mismatched):
        return
    lines = [f"checkpoint {source} does not fit the model:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_summarise(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): {_summarise(mismatched)}")
    head = classifier_name(model)
    head_keys = [m for m in mismatched if m.startswith(f"backbone.{head}.")]
    if head_keys and len(head_keys) == len(mismatched) and not (missing or unexpected):
        rows = state_dict[f"backbone.{head}.weight"].shape[0]
        lines.append(f"  the checkpoint's classifier has {rows} classes: pass num_classes={rows}")
    raise CheckpointMismatchError("\n".join(lines), missing, unexpected, mismatched)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, str]:
    """Load weights strictly: tdnzoo safetensors, a tdnzoo training checkpoint, or an official
    TDN / TSM release (converted on the fly). Returns the file's metadata.

    Raises:
        CheckpointError: unreadable file or hash mismatch.
        CheckpointMismatchError: keys or shapes that do not fit, all listed.
    """
    check_sha256(path, sha256)
    state_dict, metadata = read_state_dict(path)
    if any(k.startswith("module.") for k in state_dict) and not any(k.startswith("module.base_model.") for k in state_dict):
        state_dict = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    state_dict, fmt = convert_official(state_dict, set(model.state_dict()), classifier_name(model))
    if fmt:
        _log.info("converted an official %s checkpoint from %s", fmt.upper(), path)
    check_fit(model, state_dict, str(path))
    model.load_state_dict(state_dict, strict=True)
    return metadata


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write the model's state_dict as safetensors, with tdnzoo metadata (architecture, args)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "library": "tdnzoo"}
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if "architecture" in cfg:
        meta["architecture"] = str(cfg["architecture"])
    if getattr(model, "model_args", None):
        meta["model_args"] = json.dumps(model.model_args, sort_keys=True)
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)  # never leave a half-written file under the final name
    return path
