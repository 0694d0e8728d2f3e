"""The training loop: one process or many under torchrun, with checkpoints that survive any crash."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.datasets import DATASET_PRESETS, CollatableSamples, VideoDataset, build_dataset
from ..data.transforms import eval_transform, train_transform
from ..data.workers import WorkerTimeoutError, watched_loader
from ..errors import TdnzooError
from ..progress import progress
from .config import TrainConfig
from .distributed import DistInfo, ShardSampler, all_gather_objects, all_reduce_sum, barrier, setup_distributed
from .metrics import MetricsLog, topk_correct
from .optim import build_optimizer, build_scheduler
from .state import FORMAT, capture_rng, load_training_checkpoint, restore_rng, save_atomic, unwrap_model

__all__ = ["TrainResult", "TrainingError", "apply_bn_mode", "build_datasets", "train"]

_log = logging.getLogger(__name__)
LAST, BEST = "last.pt", "best.pt"


class TrainingError(TdnzooError, RuntimeError):
    """A run that cannot start or go on: existing run without ``resume``, a diverged loss, ..."""


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    output: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)


def build_datasets(cfg: TrainConfig) -> tuple[VideoDataset, VideoDataset | None]:
    """Training and validation datasets of a config (validation ``None`` when there is none).

    Their clip layout and transforms are set from the model by :func:`train`.

    Raises:
        DataError: missing root or list file, empty class folder, label out of range.
    """
    common = {"num_segments": 1, "seed": cfg.seed, "frame_template": None}
    train_ds = build_dataset(
        cfg.dataset, root=cfg.data_root, split=cfg.train_split, list_file=cfg.train_list, mode="train",
        num_classes=cfg.num_classes, **common,
    )
    val_ds = None
    has_val = cfg.val_list is not None if cfg.dataset != "folder" else (Path(cfg.data_root) / cfg.val_split).is_dir()
    if has_val:
        val_ds = build_dataset(
            cfg.dataset, root=cfg.data_root, split=cfg.val_split, list_file=cfg.val_list, mode="val",
            num_classes=train_ds.num_classes, class_names=train_ds.class_names, **common,
        )
    return train_ds, val_ds


def apply_bn_mode(model: nn.Module, mode: str) -> None:
    """After ``model.train()``: ``partial`` keeps only the first BatchNorm learning (official TSN/TSM
    partial BN), ``frozen`` none; frozen layers use their running statistics and fixed affine weights."""
    if mode == "train":
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for i, m in enumerate(norms):
        if mode == "partial" and i == 0:
            continue
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flip_settings(cfg: TrainConfig) -> tuple[dict[int, int] | None, bool]:
    preset = DATASET_PRESETS[cfg.dataset]
    label_map = cfg.flip_label_map if cfg.flip_label_map is not None else (preset.flip_label_map or None)
    mirrored = cfg.mirrored_classes if cfg.mirrored_classes is not None else preset.mirrored_classes
    return label_map, mirrored


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _create_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    from ..models import create_model

    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("drop_rate", cfg.dropout)
    if cfg.pretrained_backbone:
        kwargs["pretrained_backbone"] = True
    return create_model(
        cfg.model, pretrained=cfg.pretrained, num_classes=num_classes, num_segments=cfg.num_segments, **kwargs
    )


def _checkpoint(
    cfg: TrainConfig, model: nn.Module, optimizer, scheduler, scaler, epoch: int, best: dict, metrics: dict,
    class_names: list[str] | None,
) -> dict[str, Any]:
    plain = unwrap_model(model)
    pcfg = getattr(plain, "pretrained_cfg", {}) or {}
    return {
        "format": FORMAT,
        "version": 1,
        "model": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "rng": capture_rng(),
        "args": cfg.to_dict(),
        "architecture": str(pcfg.get("architecture", cfg.model.partition(".")[0])),
        "model_name": cfg.model,
        "model_args": _plain(getattr(plain, "model_args", {})),
        "num_classes": int(getattr(plain, "num_classes", 0)),
        "class_names": list(class_names or []),
        # What predict, eval and the exports read back (tdnzoo.models.description), with no flag repeated.
        "description": _description(cfg, plain, class_names),
        "best_metric": best.get("metric"),
        "best_epoch": best.get("epoch"),
        "metrics": metrics,
    }


def _description(cfg: TrainConfig, model: nn.Module, class_names: list[str] | None) -> dict[str, Any]:
    from ..models.description import describe_model

    described = dataclasses.replace(describe_model(model), class_names=tuple(class_names) if class_names else None,
                        input_size=cfg.input_size, test_views=DATASET_PRESETS[cfg.dataset].default_views)
    return described.to_dict()


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively: only types ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _loader(dataset: Dataset, batch_size: int, sampler, cfg: TrainConfig, device: torch.device, drop_last: bool):
    # A batch that does not come within cfg.loader_timeout raises WorkerTimeoutError naming the worker and video.
    return watched_loader(
        dataset, batch_size=batch_size, sampler=sampler, workers=cfg.workers, timeout_s=cfg.loader_timeout,
        drop_last=drop_last, pin_memory=device.type == "cuda", persistent_workers=False,
    )


class _SkipFirst(Sampler):
    """A sampler without its first ``count`` indices: the rest of an epoch a stopped run had begun."""

    def __init__(self, sampler: Sampler, count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.count, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.count, 0)


def _progress(iterable, enabled: bool, **kwargs):
    # Never tqdm(loader): it opens a throwaway loader iterator, which draws from the global torch
    # generator (other dropout masks than without the bar) and starts workers (tdnzoo.progress).
    return progress(iterable, enabled, leave=False, **kwargs)


def _train_epoch(
    cfg: TrainConfig, info: DistInfo, model: nn.Module, loader: DataLoader, optimizer, scheduler, scaler, epoch: int,
    step_callback: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    model.train()
    apply_bn_mode(model, cfg.bn)
    criterion = nn.CrossEntropyLoss()
    loss_sum, correct1, correct5, seen, steps, lr = 0.0, 0, 0, 0, 0, 0.0
    skipped: list[str] = []
    start = time.perf_counter()
    bar = _progress(loader, cfg.progress and info.is_main, desc=f"epoch {epoch + 1}/{cfg.epochs}")
    for step, (clips, labels, _, bad) in enumerate(bar):
        clips = clips.to(info.device, non_blocking=True)
        labels = labels.to(info.device, non_blocking=True)
        with _autocast(cfg, info.device):
            logits = model(clips)
            loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint "
                f"is kept in {cfg.output}. Lower the learning rate (now {scheduler.get_last_lr()[0]:.3g}), use "
                "--clip-grad-norm, or try --amp bf16 instead of fp16"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad_norm and cfg.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        n = labels.shape[0]
        c1, c5 = topk_correct(logits.detach().float(), labels)
        loss_sum += float(loss.detach()) * n
        correct1, correct5, seen, steps = correct1 + c1, correct5 + c5, seen + n, steps + 1
        skipped += [p for joined in bad for p in joined.split("\n") if p]
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{lr:.3g}")
        if step_callback is not None:
            step_callback(epoch, step)
    elapsed = time.perf_counter() - start
    loss_sum, correct1, correct5, seen = all_reduce_sum([loss_sum, correct1, correct5, seen], info.device)
    all_skipped = sorted({p for part in all_gather_objects(skipped) for p in part})
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_acc1": 100.0 * correct1 / max(seen, 1),
        "train_acc5": 100.0 * correct5 / max(seen, 1),
        "lr": lr if steps else scheduler.get_last_lr()[0],
        "clips_per_s": seen / elapsed if elapsed > 0 else 0.0,
        "epoch_time_s": elapsed,
        "train_clips": int(seen),
        "steps": steps,
        "skipped_videos": len(all_skipped),
        "skipped_paths": all_skipped,
    }


@torch.no_grad()
def validate(cfg: TrainConfig, info: DistInfo, model: nn.Module, loader: DataLoader) -> dict[str, float]:
    """Single-view validation; sums are gathered from every process, each video counted once."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct1, correct5, seen = 0.0, 0, 0, 0
    for clips, labels, _, _ in _progress(loader, cfg.progress and info.is_main, desc="validate"):
        clips, labels = clips.to(info.device), labels.to(info.device)
        with _autocast(cfg, info.device):
            logits = model(clips).float()
        loss_sum += float(criterion(logits, labels))
        c1, c5 = topk_correct(logits, labels)
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + labels.shape[0]
    loss_sum, correct1, correct5, seen = all_reduce_sum([loss_sum, correct1, correct5, seen], info.device)
    return {
        "val_loss": loss_sum / max(seen, 1),
        "val_acc1": 100.0 * correct1 / max(seen, 1),
        "val_acc5": 100.0 * correct5 / max(seen, 1),
        "val_clips": int(seen),
    }


def train(
    config: TrainConfig | None = None,
    *,
    step_callback: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train (or fine-tune) a tdnzoo model on a video dataset.

    Works in one process or under ``torchrun`` (DistributedDataParallel, one process per device,
    gloo on CPU). Every epoch writes ``last.pt`` atomically (and ``best.pt`` when validation
    improves) with model, optimizer, scheduler, scaler, epoch and RNG state; with ``resume`` a run
    killed at any point continues from its last epoch and, in deterministic mode, ends with the
    same weights as an uninterrupted run.

    Args:
        config: the options; ``overrides`` replace single fields (``train(cfg, epochs=3)``).
        step_callback: called as ``step_callback(epoch, step)`` after every optimizer step.

    Returns:
        a :class:`TrainResult` with the checkpoints and the per-epoch metrics.

    Raises:
        DataError: bad data found before training. TrainingError: an existing run without
        ``resume``, or a diverged loss. CheckpointError: an unreadable resume checkpoint.

    Example:
        >>> from tdnzoo.train import TrainConfig, train
        >>> train(TrainConfig(model="tsm_resnet18", data_root="data", output="runs/tsm", epochs=2,
        ...                   num_segments=4, input_size=112, batch_size=4, workers=0))
    """
    cfg = config if config is not None else TrainConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    info = setup_distributed(cfg.device)
    created_group = info.distributed
    try:
        return _train(cfg.resolved(info.world_size), info, step_callback)
    finally:
        if created_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, info: DistInfo, step_callback) -> TrainResult:
    output = Path(cfg.output)
    last_path, best_path = output / LAST, output / BEST
    resume_from: Path | None = None
    if cfg.resume:
        resume_from = last_path if cfg.resume in (True, "auto", "true", "1") else Path(str(cfg.resume))
        if not resume_from.is_file():
            if cfg.resume in (True, "auto", "true", "1"):
                _log.warning("--resume: no checkpoint in %s yet, starting from scratch", output)
                resume_from = None
            else:
                raise TrainingError(f"--resume {resume_from}: no such checkpoint")
    elif last_path.is_file():
        raise TrainingError(
            f"{output} already holds a run ({last_path}); pass --resume to continue it or choose another --output"
        )
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _seed_everything(cfg.seed)

    train_ds, val_ds = build_datasets(cfg)
    num_classes = train_ds.num_classes
    model = _create_model(cfg, num_classes)
    pcfg = model.pretrained_cfg
    label_map, mirrored = _flip_settings(cfg)
    for ds in (train_ds, val_ds):
        if ds is not None:
            ds.num_segments, ds.frames_per_segment = model.num_segments, model.frames_per_segment
    train_ds.transform = train_transform(
        cfg.input_size, mean=pcfg.get("mean", (0.485, 0.456, 0.406)), std=pcfg.get("std", (0.229, 0.224, 0.225)),
        flip=cfg.flip, label_map=label_map, mirrored_classes=mirrored,
    )
    if val_ds is not None:
        val_ds.transform = eval_transform(pcfg, input_size=cfg.input_size)

    per_rank = cfg.batch_size // info.world_size
    if len(train_ds) < cfg.batch_size:
        raise TrainingError(
            f"the training set has {len(train_ds)} videos, fewer than one batch of {cfg.batch_size}; lower --batch-size"
        )
    train_sampler = DistributedSampler(
        train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    train_loader = _loader(CollatableSamples(train_ds), per_rank, train_sampler, cfg, info.device, drop_last=True)
    val_loader = None
    if val_ds is not None:
        val_sampler = ShardSampler(len(val_ds), info.rank, info.world_size)
        val_loader = _loader(CollatableSamples(val_ds), per_rank, val_sampler, cfg, info.device, drop_last=False)

    model.train()
    apply_bn_mode(model, cfg.bn)  # before the optimizer: partial/frozen norms take no gradient
    if cfg.sync_bn and info.distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(info.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        model, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
    )
    scheduler = build_scheduler(
        optimizer, schedule=cfg.schedule, epochs=cfg.epochs, steps_per_epoch=len(train_loader), lr_steps=cfg.lr_steps,
        decay=cfg.lr_decay, warmup_epochs=cfg.warmup_epochs, warmup_factor=cfg.warmup_factor, min_lr=cfg.min_lr,
    )
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.amp == "fp16")

    start_epoch, start_step, best = 0, 0, {"metric": None, "epoch": None}
    metrics_log = MetricsLog(output, cfg.metrics_format)
    if resume_from is not None:
        ckpt = load_training_checkpoint(resume_from)
        if ckpt.get("num_classes") != num_classes:
            raise TrainingError(
                f"{resume_from} was trained with {ckpt.get('num_classes')} classes, the data has {num_classes}"
            )
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"])
        start_step = int(ckpt.get("step", 0))  # > 0: saved mid-epoch when the data loader stopped answering
        best = {"metric": ckpt.get("best_metric"), "epoch": ckpt.get("best_epoch")}
        restore_rng(ckpt["rng"])
        if info.is_main:
            _log.warning("resuming %s from epoch %d", resume_from, start_epoch)
            metrics_log.truncate(start_epoch)
    elif info.is_main:
        metrics_log.path.unlink(missing_ok=True)

    if info.is_main:
        import yaml

        output.mkdir(parents=True, exist_ok=True)
        (output / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")

    net: nn.Module = model
    if info.distributed:
        device_ids = [info.device] if info.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        net = torch.compile(net)

    history = metrics_log.read() if info.is_main else []
    for epoch in range(start_epoch, cfg.epochs):
        train_sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch + 1}
        loader = train_loader
        if epoch == start_epoch and start_step:  # resumed mid-epoch: the batches not trained on yet
            loader = _loader(CollatableSamples(train_ds), per_rank, _SkipFirst(train_sampler, start_step * per_rank),
                             cfg, info.device, drop_last=True)
        try:
            record.update(_train_epoch(cfg, info, net, loader, optimizer, scheduler, scaler, epoch, step_callback))
            if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                record.update(validate(cfg, info, net, val_loader))
        except WorkerTimeoutError as exc:
            # Never lose the run's progress to a stuck worker: save the state after the last step taken.
            step = scheduler.last_epoch - epoch * len(train_loader)  # the scheduler steps once per batch
            where = f"after epoch {epoch + 1}, step {step}"
            if step >= len(train_loader):  # the validation loader stopped: the epoch's training is whole
                where = f"after epoch {epoch + 1}'s training (its validation did not finish)"
                epoch, step = epoch + 1, 0  # --resume starts the next epoch, not an empty rest of this one
            if info.is_main:
                state = _checkpoint(cfg, net, optimizer, scheduler, scaler, epoch, best, {}, train_ds.class_names)
                state["step"] = step
                save_atomic(state, last_path)
            raise WorkerTimeoutError(
                f"{exc}. The run is saved in {last_path} {where}; run again with "
                "--resume to continue from there"
            ) from exc
        metric = record.get("val_acc1", -record["train_loss"])
        improved = best["metric"] is None or metric > best["metric"]
        if improved and ("val_acc1" in record or val_loader is None):
            best = {"metric": float(metric), "epoch": epoch + 1}
        if info.is_main:
            state = _checkpoint(cfg, net, optimizer, scheduler, scaler, epoch + 1, best, _plain(record),
                                train_ds.class_names)
            save_atomic(state, last_path)
            if best["epoch"] == epoch + 1:
                save_atomic(state, best_path)
            metrics_log.append(record)
            history.append(record)
            print(_summary(record, cfg.epochs), flush=True)
        barrier()  # no process starts the next epoch before rank 0 has saved this one
    return TrainResult(
        output=output, last_checkpoint=last_path, best_checkpoint=best_path if best_path.is_file() else None,
        best_metric=best["metric"], best_epoch=best["epoch"], history=history,
    )


def _summary(record: dict[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"acc1 {record['train_acc1']:.1f}",
        f"lr {record['lr']:.3g}",
        f"{record['clips_per_s']:.1f} clips/s",
    ]
    if "val_acc1" in record:
        parts += [f"val_loss {record['val_loss']:.4f}", f"val_acc1 {record['val_acc1']:.1f}", f"val_acc5 {record['val_acc5']:.1f}"]
    if record.get("skipped_videos"):
        shown = ", ".join(record["skipped_paths"][:3]) + (" ..." if record["skipped_videos"] > 3 else "")
        parts.append(f"skipped {record['skipped_videos']} unreadable video(s): {shown}")
    return " | ".join(parts)
