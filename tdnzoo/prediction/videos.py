"""Top classes of whole videos: :func:`predict`."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.errors import VideoDecodeError
from ..data.workers import DEFAULT_WORKER_TIMEOUT_S, watched_loader
from .frames import video_fps
from .loading import class_names_of, default_device, load_predict_model
from .scoring import ViewScorer
from .spec import ViewSpec, resolve_view_spec

__all__ = ["ClassScore", "Prediction", "predict", "top_classes"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassScore:
    """One class of a ranking: its index, name and probability."""

    index: int
    label: str
    prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "prob": self.prob}


def top_classes(probs: torch.Tensor, names: Sequence[str], k: int) -> list[ClassScore]:
    """The ``k`` most probable classes of a ``[C]`` score vector, best first."""
    values, indices = probs.topk(min(max(int(k), 1), probs.numel()))
    return [ClassScore(int(i), names[int(i)] if int(i) < len(names) else f"class_{int(i)}", float(v))
            for v, i in zip(values, indices)]


@dataclass
class Prediction:
    """The result for one video: its scores and top classes, or why it could not be read.

    Attributes:
        video: the path as given.
        probs: ``[C]`` softmax averaged over the views (``None`` on error).
        top_k: the best classes, best first.
        num_frames: frames in the video: the frames that decode, for a file cut short.
        views: ``CLIPSxCROPS`` used.
        error: the decoding error, when the video was skipped.
        seconds: duration of ``num_frames`` at the file's frame rate (``None`` for frame folders).
        declared_frames: what the container declares, when more than decode (a file cut short).
    """

    video: str
    probs: torch.Tensor | None = None
    top_k: list[ClassScore] = field(default_factory=list)
    num_frames: int | None = None
    views: str | None = None
    error: str | None = None
    seconds: float | None = None
    declared_frames: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        """The file holds fewer frames than it declares; it was sampled within the frames it holds."""
        return self.declared_frames is not None

    @property
    def label(self) -> str | None:
        """The best class, ``None`` on error."""
        return self.top_k[0].label if self.top_k else None

    def to_dict(self) -> dict[str, Any]:
        if not self.ok:
            return {"video": self.video, "error": self.error}
        damage = {"declared_frames": self.declared_frames, "truncated": True} if self.truncated else {}
        return {
            "video": self.video, "num_frames": self.num_frames, "seconds": self.seconds, **damage, "views": self.views,
            "top_k": [{"rank": r, **c.to_dict()} for r, c in enumerate(self.top_k, 1)],
        }


@dataclass(frozen=True)
class VideoLength:
    """How long a video really is: the frames that decode, what its container declares, its duration."""

    num_frames: int
    declared_frames: int | None = None
    fps: float | None = None

    @property
    def truncated(self) -> bool:
        return self.declared_frames is not None and self.num_frames < self.declared_frames

    @property
    def seconds(self) -> float | None:
        return round(self.num_frames / self.fps, 3) if self.fps else None


def read_views(spec: ViewSpec, path: str, *, backend: str | None = None) -> tuple[torch.Tensor, VideoLength]:
    """The test views ``[V, T, 3, H, W]`` of one video and its real length (a file cut short is sampled
    within the frames it holds, see :func:`tdnzoo.data.damage.read_sampled`).

    Raises:
        VideoDecodeError: the video cannot be read.
    """
    views, read = spec.load_sampled(path, backend=backend)
    declared = read.declared_frames if read.truncated else None
    return views, VideoLength(read.num_frames, declared, video_fps(path))


class _VideoViews(Dataset):
    """Views of each video, or the error that stopped it (decoding runs in loader workers)."""

    def __init__(self, paths: Sequence[str], spec: ViewSpec, backend: str | None) -> None:
        self.paths, self.spec, self.backend = list(paths), spec, backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, VideoLength | None, str | None]:
        try:
            views, length = read_views(self.spec, self.paths[index], backend=self.backend)
        except VideoDecodeError as exc:
            return index, None, None, str(exc)
        return index, views, length, None

    def describe_item(self, index: int) -> str:
        return f"video {index}: {self.paths[index]}"


def _as_is(item):
    return item


def _paths(videos: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    paths = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
    if not paths:
        raise ValueError("no videos given")
    return [os.fspath(p) for p in paths]


def _place(model: nn.Module, device: str | torch.device | None, given_module: bool) -> torch.device:
    if device is None and given_module:
        return next(model.parameters()).device
    device = default_device(device)
    model.to(device)
    return device


def predict(
    videos: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | nn.Module | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_segments: int | None = None,
    top_k: int = 5,
    views: str | Sequence[int] | None = None,
    input_size: int | None = None,
    full_res: bool | None = None,
    labels: str | os.PathLike | Sequence[str] | None = None,
    batch_size: int = 8,
    workers: int = 0,
    device: str | torch.device | None = None,
    backend: str | None = None,
    progress: bool = False,
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
) -> list[Prediction]:
    """Top-k classes of video files (or frame folders), sampled and transformed as the model's cfg says.

    Each video's ``CLIPSxCROPS`` views go through the model, their softmax scores are averaged
    (as in evaluation). Views of consecutive videos share forward passes of ``batch_size`` views.
    A video that cannot be decoded (or an image, not a video) is logged and returned with its ``error``;
    the others still get their results. A file cut short (fewer frames decode than its container
    declares) is sampled within the frames it holds and reported at that length, with a
    :class:`~tdnzoo.data.damage.TruncatedVideoWarning`.

    Args:
        videos: one path or several.
        model: ``NAME[.TAG]`` (a tag loads its published weights), an export with its weights
            (``local-dir:PATH``, ``hf-hub:ORG/NAME[@REV]``), or a module; optional with a tdnzoo
            training ``checkpoint``.
        checkpoint: weights to load (training checkpoint, safetensors, official release).
        num_segments: segments per clip (default: the checkpoint's or the tag's).
        top_k: classes per video.
        views: ``CLIPSxCROPS`` (default: the tag's test protocol, else ``1x1``).
        input_size: crop side (default: the cfg's, or the training checkpoint's).
        full_res: three crops of the whole resized side (default: as the tag was tested).
        labels: class names: a list, a file with one per line, or ``kinetics400``/``sthv1``/``sthv2``
            (default: the cfg's ``label_names``, a training checkpoint's class names, else ``class_<i>``).
        batch_size: views per forward pass.
        workers: decoding processes (0 decodes in this process).
        worker_timeout_s: deadline for a video from the ``workers`` (0: none); a stuck worker raises
            :class:`~tdnzoo.data.workers.WorkerTimeoutError` naming the video.
        device: default: the module's device, or CUDA when available.
        backend: video decoder (see :func:`tdnzoo.data.list_backends`).
        progress: a progress bar on stderr.

    Returns:
        one :class:`Prediction` per video, in the order given.

    Example:
        >>> [pred] = tdnzoo.predict("clip.mp4", "tdn_resnet50.k400_8f", views="1x1", top_k=3)
        >>> pred.top_k[0].label, pred.top_k[0].prob
    """
    paths = _paths(videos)
    net, _ = load_predict_model(model, checkpoint=checkpoint, num_segments=num_segments)
    spec = resolve_view_spec(net, views=views, input_size=input_size, full_res=full_res)
    names = class_names_of(net, labels)
    device = _place(net, device, isinstance(model, nn.Module))
    return run_predictions(paths, net, spec, names, top_k=top_k, batch_size=batch_size, workers=workers,
                           device=device, backend=backend, progress=progress, worker_timeout_s=worker_timeout_s)


def run_predictions(
    paths: Sequence[str],
    model: nn.Module,
    spec: ViewSpec,
    names: Sequence[str],
    *,
    top_k: int = 5,
    batch_size: int = 8,
    workers: int = 0,
    device: torch.device | None = None,
    backend: str | None = None,
    progress: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
) -> list[Prediction]:
    """:func:`predict` with the model, views and names already resolved (the CLI's entry).

    ``on_error(path, message)`` hears of each unreadable video (default: a logged warning).
    """
    from tqdm.auto import tqdm

    loader = watched_loader(_VideoViews(paths, spec, backend), batch_size=None, workers=workers,
                            timeout_s=worker_timeout_s, collate_fn=_as_is)
    scorer = ViewScorer(model, batch_size=batch_size, device=device)
    results: list[Prediction | None] = [None] * len(paths)
    lengths: dict[int, VideoLength] = {}
    with tqdm(total=len(paths), desc="predict", unit="video", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:

        def finish(done: list) -> None:
            for index, probs in done:
                length = lengths.pop(index)
                results[index] = Prediction(
                    paths[index], probs, top_classes(probs, names, top_k), length.num_frames, spec.views,
                    seconds=length.seconds, declared_frames=length.declared_frames,
                )
                bar.update()

        for index, views, length, error in loader:
            if error is not None:
                if on_error is None:
                    _log.warning("skipping %s: %s", paths[index], error)
                else:
                    on_error(paths[index], error)
                results[index] = Prediction(paths[index], error=error)
                bar.update()
                continue
            lengths[index] = length
            finish(scorer.push(index, views))
        finish(scorer.flush())
    return [r for r in results if r is not None]
