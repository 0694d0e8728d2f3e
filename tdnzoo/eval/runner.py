"""Running a model over a test-mode dataset (one process, or sharded under torchrun and gathered)."""
from __future__ import annotations

import torch
from torch import nn

from ..data.datasets import CollatableSamples, VideoDataset
from ..data.transforms import ThreeCrop
from ..data.workers import DEFAULT_WORKER_TIMEOUT_S, watched_loader
from ..progress import progress as progress_bar
from ..train.distributed import ShardSampler, all_gather_objects
from .scores import EvalResult, average_view_scores

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: VideoDataset,
    *,
    batch_size: int = 1,
    workers: int = 0,
    device: str | torch.device | None = None,
    amp: str = "none",
    progress: bool = False,
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
) -> EvalResult:
    """Scores of ``model`` on a test-mode dataset (items ``[V, T, 3, H, W]``).

    Each view goes through the model; softmax scores are averaged over the ``V`` views of a video.
    Under torchrun (an initialised process group) each process takes every ``world_size``-th video
    and the scores are gathered on every process.

    ``worker_timeout_s``: deadline for a batch from the ``workers`` (0: none); a stuck worker raises
    :class:`~tdnzoo.data.workers.WorkerTimeoutError` naming the video.
    """
    if dataset.mode != "test":
        raise ValueError("evaluate() needs a dataset built with mode='test' (see build_eval_dataset)")
    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist_on else 0
    world = torch.distributed.get_world_size() if dist_on else 1
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.eval().to(device)
    loader = watched_loader(
        CollatableSamples(dataset), batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world),
        workers=workers, timeout_s=worker_timeout_s, pin_memory=device.type == "cuda",
    )
    loader = progress_bar(loader, progress and rank == 0, desc="evaluate")  # never tqdm(loader): see tdnzoo.progress
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
        if amp in ("bf16", "fp16") else None
    )
    indices, probs, labels, skipped = [], [], [], []
    for clips, label, index, bad in loader:
        b, v = clips.shape[:2]
        flat = clips.flatten(0, 1).to(device, non_blocking=True)
        if autocast is not None:
            with autocast:
                logits = model(flat)
        else:
            logits = model(flat)
        p = average_view_scores(logits, v)
        probs.append(p.cpu())
        labels.append(label)
        indices.append(index)
        skipped += [s for joined in bad for s in joined.split("\n") if s]
    num_classes = getattr(model, "num_classes", None) or (probs[0].shape[1] if probs else 0)
    local = (
        torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
        torch.cat(probs) if probs else torch.zeros(0, num_classes),
        torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        skipped,
    )
    parts = all_gather_objects(local)
    order = torch.cat([p[0] for p in parts])
    sort = order.argsort()
    return EvalResult(
        probs=torch.cat([p[1] for p in parts])[sort],
        labels=torch.cat([p[2] for p in parts])[sort],
        views=(dataset.num_clips, _crops_of(dataset)),
        class_names=dataset.class_names,
        skipped=sorted({s for p in parts for s in p[3]}),
    )


def _crops_of(dataset: VideoDataset) -> int:
    steps = getattr(dataset.transform, "transforms", [])
    return 3 if any(isinstance(s, ThreeCrop) for s in steps) else 1
