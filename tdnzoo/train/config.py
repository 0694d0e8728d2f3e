"""Training options: one dataclass, readable from YAML, with the official recipe as defaults."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "load_config_file"]

# Official step schedules (docs/design.md §5) as fractions of the run: Something-Something decays at
# 30/45/55 of 60 epochs, Kinetics at 50/75/90 of 100.
_STEP_FRACTIONS = {"kinetics": (0.5, 0.75, 0.9)}
_DEFAULT_STEP_FRACTIONS = (30 / 60, 45 / 60, 55 / 60)
# Official weight decay: 5e-4 for Something-Something, 1e-4 for Kinetics.
_SGD_WEIGHT_DECAY = {"kinetics": 1e-4}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` fields get recipe defaults from :meth:`resolved`.

    Data:
        model: a tdnzoo model name (``tdn_resnet50``, ``tsm_resnet18.<tag>``, ...).
        data_root: the data folder (``<split>/<class>/...`` for the folder layout, list paths' base otherwise).
        dataset: ``folder``, ``sthv1``, ``sthv2`` or ``kinetics``.
        train_list, val_list: list files (list layouts).
        train_split, val_split: sub-folders of the folder layout; ``val_split`` missing -> no validation.
        num_classes: defaults to the dataset's (folder count, or 174 / 400 for the presets).
        num_segments: segments per clip (default: the model's, 8).
        input_size: training crop and evaluation crop side.
        workers: DataLoader worker processes per training process.
        loader_timeout: seconds to wait for a batch from the workers before the run saves its state and
            stops with an error naming the stuck worker and video (0: wait forever). The default, 10
            minutes, leaves room for slow network file systems.
        flip: random horizontal flips (swapping mirrored labels for Something-Something).
        flip_label_map: ``{class: mirror class}`` for the folder layout's mirrored classes.
        mirrored_classes: the dataset has direction-dependent classes; flip needs ``flip_label_map``.
    Model:
        pretrained: load the zoo's pretrained weights of the model's tag (head reset if classes differ).
        pretrained_backbone: initialise the backbone from timm's ImageNet weights (official recipe).
        dropout: dropout before the classifier (official 0.5).
        bn: ``train`` (all BatchNorm layers learn, TDN), ``partial`` (only the first one updates
            its statistics, official TSN/TSM), or ``frozen`` (none do).
        sync_bn: SyncBatchNorm across processes (CUDA DDP only).
    Optimisation:
        optimizer: ``sgd`` (official: momentum 0.9) or ``adamw``.
        lr: learning rate for the global batch; default ``0.01 * batch_size / 64`` for SGD (the
            official SSv1 0.01 at 64 and K400 0.02 at 128), ``1e-3 * batch_size / 256`` for AdamW.
        weight_decay: default 5e-4 (1e-4 for Kinetics) with SGD, 0.05 with AdamW; never on norms and biases.
        schedule: ``step`` (x ``lr_decay`` at ``lr_steps``) or ``cosine`` (to ``min_lr``), per iteration.
        lr_steps: epochs of the step decays (default: the official fractions of ``epochs``).
        warmup_epochs: linear warm-up from ``warmup_factor * lr``.
        clip_grad_norm: gradient-norm clip (official 20; 0 disables).
        batch_size: global batch, split over the processes.
        epochs: training epochs.
    Runtime:
        amp: ``none``, ``bf16`` or ``fp16`` (with a gradient scaler).
        channels_last: NHWC memory format for the convolutions.
        compile: wrap the model in ``torch.compile``.
        deterministic: deterministic algorithms (for bit-identical resume); slower on GPUs.
        seed: seeds sampling, augmentation, shuffling and initialisation.
        output: run folder (checkpoints, metrics, config).
        resume: ``True``/``'auto'`` continues from ``output/last.pt``; a path continues from that file.
        eval_every: validate every n epochs (and after the last).
        metrics_format: ``jsonl`` or ``csv``.
        progress: tqdm progress bars (rank 0).
        device: ``cpu``, ``cuda``, ``cuda:1``... (default: CUDA when available).
    """

    model: str = ""
    data_root: str = ""
    output: str = ""
    dataset: str = "folder"
    train_list: str | None = None
    val_list: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int | None = None
    num_segments: int | None = None
    input_size: int = 224
    workers: int = 4
    loader_timeout: float = 600.0
    flip: bool = True
    flip_label_map: dict[int, int] | None = None
    mirrored_classes: bool | None = None
    pretrained: bool = False
    pretrained_backbone: bool = False
    dropout: float = 0.5
    bn: str = "train"
    sync_bn: bool = False
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "step"
    lr_steps: list[float] | None = None
    lr_decay: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.01
    clip_grad_norm: float = 20.0
    batch_size: int = 8
    epochs: int = 60
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    seed: int = 0
    resume: bool | str = False
    eval_every: int = 1
    metrics_format: str = "jsonl"
    progress: bool = True
    device: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` for values out of range (names the option and the allowed values)."""
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("step", "cosine"),
            "amp": ("none", "bf16", "fp16"),
            "bn": ("train", "partial", "frozen"),
            "metrics_format": ("jsonl", "csv"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("batch_size", "epochs", "eval_every", "input_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.loader_timeout < 0:
            raise ValueError(f"loader_timeout must be >= 0 seconds (0: no deadline), got {self.loader_timeout}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def resolved(self, world_size: int = 1) -> TrainConfig:
        """A copy with recipe defaults filled in (lr, weight decay, lr steps).

        Raises:
            ValueError: missing model, data root or output; batch not divisible by the process count.
        """
        for name in ("model", "data_root", "output"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required (--{name.replace('_', '-')})")
        if self.batch_size % world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is the global batch and must divide evenly over {world_size} processes"
            )
        cfg = dataclasses.replace(self)
        if cfg.lr is None:
            cfg.lr = 0.01 * cfg.batch_size / 64 if cfg.optimizer == "sgd" else 1e-3 * cfg.batch_size / 256
        if cfg.weight_decay is None:
            cfg.weight_decay = _SGD_WEIGHT_DECAY.get(cfg.dataset, 5e-4) if cfg.optimizer == "sgd" else 0.05
        if cfg.lr_steps is None:
            fractions = _STEP_FRACTIONS.get(cfg.dataset, _DEFAULT_STEP_FRACTIONS)
            cfg.lr_steps = [f * cfg.epochs for f in fractions]  # fractional epochs: decays fall mid-epoch
        cfg.lr_steps = [float(s) for s in cfg.lr_steps]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (str, int, float, bool, None, lists, dicts): safe in ``weights_only`` checkpoints."""
        out = dataclasses.asdict(self)
        if out["flip_label_map"] is not None:
            out["flip_label_map"] = {int(k): int(v) for k, v in out["flip_label_map"].items()}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict with option names (``-`` or ``_``); unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        clean = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**clean)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a YAML file (a mapping of option names to values)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(values).__name__}")
    return values
