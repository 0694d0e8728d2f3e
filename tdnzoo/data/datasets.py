"""Video datasets: the official list formats and a folder-per-class layout.

Each item is ``(clip, label)``: ``clip`` a float ``[T, 3, H, W]`` tensor (``T = num_segments *
frames_per_segment``, segment-major, normalised: the model contract) for training and
validation, or ``[V, T, 3, H, W]`` for multi-view testing (``V = clips * crops``, clip-major).

Layouts:

* ``folder``: ``ROOT/<split>/<class name>/<video file or frame folder>``; classes are the sorted
  folder names, no list file needed.
* ``sthv1``: list lines ``frame_dir num_frames label``, frames ``{:05d}.jpg`` (Something-Something V1).
* ``sthv2``: the same with ``{:06d}.jpg`` frames, or lines ``video.webm label``.
* ``kinetics``: list lines ``video.mp4 label`` (``video label`` also finds ``video.mp4``).

Paths in list files are relative to the data root. A video that fails to decode is replaced by
another one, with a :class:`CorruptVideoWarning`, and counted (:attr:`VideoDataset.num_skipped`).
A video that holds fewer frames than it declares (a file cut short) is sampled within the frames it
holds, with a :class:`~tdnzoo.data.damage.TruncatedVideoWarning` once per file and process.
A missing root or list file, a malformed line, an empty class folder or a label outside the
class range raise :class:`DataError` when the dataset is built.

Example:
    >>> ds = build_dataset("folder", root="data", split="train", num_segments=8, frames_per_segment=5,
    ...                    transform=train_transform(224))
    >>> clip, label = ds[0]          # clip: [40, 3, 224, 224]
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from . import sampling
from .damage import read_sampled
from .decode import VIDEO_EXTENSIONS, open_video
from .errors import DataError, VideoDecodeError
from .transforms import SOMETHING_FLIP_LABEL_MAP, eval_transform, parse_views, train_transform

__all__ = [
    "DATASET_PRESETS",
    "CorruptVideoWarning",
    "CollatableSamples",
    "DatasetPreset",
    "Sample",
    "VideoDataset",
    "VideoRecord",
    "build_dataset",
    "load_label_names",
    "load_views",
    "read_list_file",
    "scan_folder",
]

_log = logging.getLogger(__name__)
MODES = ("train", "val", "test")


class CorruptVideoWarning(UserWarning):
    """A video that failed to decode and was replaced by another sample."""


@dataclass(frozen=True)
class VideoRecord:
    """One video: a file or frame folder, its label, and its frame count when a list gives it."""

    path: str
    label: int
    num_frames: int | None = None


@dataclass(frozen=True)
class DatasetPreset:
    """What a named dataset brings: list format, frame names, classes and flip rules."""

    name: str
    num_classes: int | None
    frame_template: str | None = None
    labels_file: str | None = None  # in tdnzoo/labels
    video_suffixes: tuple[str, ...] = ()  # tried when a list names a path without its extension
    mirrored_classes: bool = False
    flip_label_map: dict[int, int] = field(default_factory=dict)
    default_views: str = "1x1"


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "folder": DatasetPreset("folder", None),
    "sthv1": DatasetPreset(
        "sthv1", 174, "{:05d}.jpg", "sthv1.txt", mirrored_classes=True, flip_label_map=dict(SOMETHING_FLIP_LABEL_MAP)
    ),
    "sthv2": DatasetPreset(
        "sthv2", 174, "{:06d}.jpg", "sthv2.txt", (".webm", ".mp4"), mirrored_classes=True,
        flip_label_map=dict(SOMETHING_FLIP_LABEL_MAP),
    ),
    "kinetics": DatasetPreset("kinetics", 400, None, "kinetics400.txt", (".mp4", ".webm", ".mkv"), default_views="10x3"),
}


def load_label_names(name_or_path: str) -> list[str]:
    """Class names, one per line: a file path, or a packaged list (``kinetics400``, ``sthv1``, ``sthv2``)."""
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        stem = name_or_path if name_or_path.endswith(".txt") else f"{name_or_path}.txt"
        try:
            text = resources.files("tdnzoo").joinpath("labels", stem).read_text(encoding="utf-8")
        except (FileNotFoundError, OSError):
            raise DataError(f"label names not found: {name_or_path} is neither a file nor a packaged list") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_list_file(
    list_file: str | os.PathLike, *, root: str | os.PathLike | None = None, num_classes: int | None = None
) -> list[VideoRecord]:
    """Parse an official list file: ``path num_frames label`` or ``path label`` per line.

    Paths are made absolute against ``root``. Blank lines and ``#`` comments are skipped.

    Raises:
        DataError: missing file, malformed line or label outside ``[0, num_classes)`` (line number given).
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"list file not found: {list_file}")
    base = Path(root) if root is not None else list_file.parent
    records = []
    for lineno, raw in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) >= 3 and parts[-2].isdigit():
                path = " ".join(parts[:-2])
                num_frames, label = int(parts[-2]), int(parts[-1])
            elif len(parts) >= 2:
                path, num_frames, label = " ".join(parts[:-1]), None, int(parts[-1])
            else:
                raise ValueError
        except ValueError:
            raise DataError(
                f"{list_file}:{lineno}: expected 'path num_frames label' or 'path label' with integer "
                f"label, got {raw!r}"
            ) from None
        _check_label(label, num_classes, f"{list_file}:{lineno}")
        records.append(VideoRecord(str(base / path), label, num_frames))
    if not records:
        raise DataError(f"list file {list_file} holds no videos")
    return records


def _check_label(label: int, num_classes: int | None, where: str) -> None:
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(
            f"{where}: label {label} is outside the class range {bound}; check the list file or pass "
            "the right number of classes"
        )


def _is_video_item(entry: os.DirEntry) -> bool:
    if entry.name.startswith("."):
        return False
    if entry.is_dir():
        return True
    return entry.name.lower().endswith(VIDEO_EXTENSIONS)


def scan_folder(
    root: str | os.PathLike, *, class_names: Sequence[str] | None = None
) -> tuple[list[VideoRecord], list[str]]:
    """Records of a folder-per-class split, ``root/<class name>/<video file or frame folder>``.

    Classes are the sorted sub-folder names unless ``class_names`` fixes them (e.g. the training
    split's, so that validation labels agree).

    Raises:
        DataError: missing root, no class folders, an empty class folder, or a class not in ``class_names``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class folders: expected {root}/<class name>/<video file or frame folder>")
    names = list(class_names) if class_names is not None else folders
    index = {n: i for i, n in enumerate(names)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(f"{root}: class folders {unknown} are not among the {len(names)} known classes")
    records = []
    for name in folders:
        items = sorted(e.path for e in os.scandir(root / name) if _is_video_item(e))
        if not items:
            raise DataError(
                f"class folder {root / name} is empty: expected video files ({', '.join(VIDEO_EXTENSIONS[:3])}, ...) "
                "or frame folders; remove the folder or add videos"
            )
        records += [VideoRecord(p, index[name]) for p in items]
    return records, names


class Sample(NamedTuple):
    """A loaded item with its history: the paths that failed to decode before it (``skipped``)."""

    clip: torch.Tensor
    label: int
    index: int
    skipped: tuple[str, ...]


class CollatableSamples(Dataset):
    """A :class:`VideoDataset`'s samples as ``(clip, label, index asked for, skipped)`` tuples a DataLoader collates,
    ``skipped`` the paths that failed to decode joined by newlines, so the main process can count them."""

    def __init__(self, dataset: "VideoDataset") -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str]:
        sample = self.dataset.load(index)
        # One memory layout whatever the worker count: the main process's collate keeps the clip's
        # strides (channels-last from the decoder) but a worker's collates into a contiguous buffer,
        # and convolutions on the two layouts round differently, so seeded runs would drift apart.
        return sample.clip.contiguous(), sample.label, index, "\n".join(sample.skipped)

    def describe_item(self, index: int) -> str:
        return self.dataset.describe_item(index)


class VideoDataset(Dataset):
    """Clips sampled from videos or frame folders, TSN style.

    Args:
        records: the videos.
        num_segments: segments per clip.
        frames_per_segment: consecutive frames per segment (5 for TDN).
        mode: ``'train'`` (random offsets), ``'val'`` (segment centres) or ``'test'``
            (``num_clips`` evenly spaced clips, output ``[V, T, 3, H, W]``).
        num_clips: clips per video in test mode.
        transform: a ``torchvision.transforms.v2`` transform, called as ``transform(clip, label)``
            on uint8 ``[T, 3, H, W]`` (so label-aware flips work), or any callable on the clip alone.
            ``None``: :func:`train_transform` (train) or :func:`eval_transform` (val, test) at 224.
        num_classes: checked against every label (``DataError`` when out of range).
        class_names: names of the classes, for reports.
        frame_template: frame file names in frame folders (detected per folder when ``None``).
        video_suffixes: extensions tried when a record's path does not exist as given.
        backend: decoder for video files (see :func:`tdnzoo.data.decode.list_backends`).
        image_backend: ``'pil'`` or ``'torchvision'`` for frame folders.
        max_retries: unreadable videos replaced in a row before giving up.
        seed: when set, each item's random draws (frame offsets, crops, flips, replacements)
            come from its own generator seeded by ``(seed, epoch, index)``, so an item is the same
            whatever the number of workers or processes, and training runs are reproducible.
            :meth:`set_epoch` changes the draws each epoch. ``None`` uses the global torch RNG.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        num_segments: int,
        frames_per_segment: int = 1,
        mode: str = "train",
        num_clips: int = 1,
        transform: Callable | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        frame_template: str | None = None,
        video_suffixes: Sequence[str] = (),
        backend: str | None = None,
        image_backend: str = "pil",
        max_retries: int = 10,
        seed: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not records:
            raise DataError("the dataset has no videos")
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        for i, rec in enumerate(records):
            _check_label(rec.label, num_classes, f"video {i} ({rec.path})")
        self.records = list(records)
        self.num_segments = int(num_segments)
        self.frames_per_segment = int(frames_per_segment)
        self.mode = mode
        self.num_clips = int(num_clips)
        if mode != "test" and self.num_clips != 1:
            raise ValueError(f"num_clips={num_clips} needs mode='test'")
        if transform is None:
            transform = train_transform(224) if mode == "train" else eval_transform()
        self.transform = transform
        self.num_classes = num_classes if num_classes is not None else max(r.label for r in self.records) + 1
        self.class_names = list(class_names) if class_names is not None else None
        self.frame_template = frame_template
        self.video_suffixes = tuple(video_suffixes)
        self.backend = backend
        self.image_backend = image_backend
        self.max_retries = int(max_retries)
        self.skipped: list[str] = []  # paths that failed in this process (workers keep their own)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (with ``seed`` set); call before creating the loader iterator."""
        self.epoch = int(epoch)

    def _item_seed(self, index: int) -> int:
        # A fixed mix of (seed, epoch, index): distinct streams per item and epoch, no global state.
        return ((int(self.seed) * 0x9E3779B1 + self.epoch) * 0x85EBCA77 + index) % (2**63 - 1)

    @property
    def num_frames(self) -> int:
        """Frames per clip: ``num_segments * frames_per_segment``."""
        return self.num_segments * self.frames_per_segment

    @property
    def num_skipped(self) -> int:
        """Videos replaced because they failed to decode, in this process."""
        return len(self.skipped)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.load(index)
        return sample.clip, sample.label

    def describe_item(self, index: int) -> str:
        """What item ``index`` reads, for errors: ``'item 17: /data/x.mp4'``."""
        return f"item {index}: {self.records[index].path}"

    # -- loading ----------------------------------------------------------------------------
    def _resolve(self, path: str) -> str:
        if os.path.exists(path):
            return path
        for suffix in self.video_suffixes:
            if os.path.exists(path + suffix):
                return path + suffix
        return path  # the reader reports it missing

    def _open(self, record: VideoRecord):
        path = self._resolve(record.path)
        if os.path.isdir(path):
            return open_video(
                path, backend="frames", template=self.frame_template, num_frames=record.num_frames,
                image_backend=self.image_backend,
            )
        return open_video(path, backend=self.backend)

    def _frame_indices(self, num_frames: int) -> list[list[int]]:
        if self.mode == "train":
            return [sampling.train_indices(num_frames, self.num_segments, self.frames_per_segment)]
        if self.mode == "val":
            return [sampling.val_indices(num_frames, self.num_segments, self.frames_per_segment)]
        return sampling.multi_clip_indices(num_frames, self.num_segments, self.frames_per_segment, num_clips=self.num_clips)

    def read_clips(self, record: VideoRecord) -> list[torch.Tensor]:
        """The raw uint8 ``[T, 3, H, W]`` clips of one record (one per test clip), untransformed.

        Raises:
            VideoDecodeError: the video cannot be read.
        """
        with self._open(record) as reader:
            # A video cut short is sampled again within the frames it holds (read_sampled).
            read = read_sampled(reader, lambda n: [i for clip in self._frame_indices(n) for i in clip])
        return list(read.frames.permute(0, 3, 1, 2).split(self.num_frames))

    def _apply(self, clip: torch.Tensor, label: int) -> tuple[torch.Tensor, int]:
        if isinstance(self.transform, v2.Transform):
            clip, label = self.transform(clip, label)
        elif self.transform is not None:
            clip = self.transform(clip)
        return clip, int(label)

    def load(self, index: int) -> Sample:
        """Item ``index``; a video that fails to decode is replaced by a random other one.

        Raises:
            VideoDecodeError: ``max_retries + 1`` videos in a row failed.
        """
        if self.seed is None:
            return self._load(index)
        # Transforms draw from the global RNG (torchvision v2): give them this item's stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._item_seed(index))
            return self._load(index)

    def _load(self, index: int) -> Sample:
        skipped: list[str] = []
        current = index
        for _ in range(self.max_retries + 1):
            record = self.records[current]
            try:
                raw = self.read_clips(record)
                break
            except VideoDecodeError as exc:
                skipped.append(record.path)
                self.skipped.append(record.path)
                warnings.warn(f"skipping unreadable video {record.path}: {exc}", CorruptVideoWarning, stacklevel=2)
                if len(self.records) > 1:  # another video: never the one that just failed
                    current = (current + 1 + int(torch.randint(len(self.records) - 1, ()))) % len(self.records)
        else:
            raise VideoDecodeError(
                f"{len(skipped)} videos in a row failed to decode (last: {skipped[-1]}); is the data root "
                "right and are the files intact?",
                skipped[-1],
            )
        label = record.label
        outs = []
        for clip in raw:
            out, out_label = self._apply(clip, label)
            outs.append(out)
        if self.mode == "test":
            views = [o if o.dim() == 5 else o.unsqueeze(0) for o in outs]
            clip_out = torch.cat(views)
        else:
            clip_out, label = outs[0], out_label
        return Sample(clip_out, int(label), current, tuple(skipped))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} videos, {self.num_classes} classes, mode={self.mode}, "
            f"num_segments={self.num_segments}, frames_per_segment={self.frames_per_segment})"
        )


def build_dataset(
    dataset: str = "folder",
    *,
    root: str | os.PathLike,
    split: str = "train",
    list_file: str | os.PathLike | None = None,
    num_segments: int,
    frames_per_segment: int = 1,
    mode: str | None = None,
    num_clips: int = 1,
    transform: Callable | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    frame_template: str | None = None,
    **kwargs: Any,
) -> VideoDataset:
    """A :class:`VideoDataset` for a named layout.

    Args:
        dataset: ``'folder'``, ``'sthv1'``, ``'sthv2'`` or ``'kinetics'`` (:data:`DATASET_PRESETS`).
        root: data root: the folder holding ``<split>/<class>/...`` (folder layout), or the base of
            the list file's paths.
        split: sub-folder of ``root`` for the folder layout (``'train'``, ``'val'``, ...).
        list_file: the list file (required for the list layouts).
        num_segments, frames_per_segment: clip layout (the model's).
        mode: ``'train'``, ``'val'`` or ``'test'``; default ``'train'`` for the train split, else ``'val'``.
        num_clips: clips per video (test mode).
        transform: see :class:`VideoDataset`.
        num_classes: the class count to check labels against (presets bring theirs).
        class_names: class names; the folder layout uses them to fix label order across splits.
        frame_template: frame file names (the preset's by default).
        **kwargs: more :class:`VideoDataset` arguments.

    Raises:
        DataError: unknown layout, missing root or list file, empty class folder, bad label.
    """
    try:
        preset = DATASET_PRESETS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset layout {dataset!r}; expected one of {', '.join(DATASET_PRESETS)}") from None
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root not found: {root}")
    if mode is None:
        mode = "train" if split == "train" else "val"
    if preset.name == "folder":
        records, names = scan_folder(root / split, class_names=class_names)
        if num_classes is not None and len(names) > num_classes:
            raise DataError(f"{root / split} has {len(names)} classes but num_classes={num_classes}")
        class_names = names
    else:
        if list_file is None:
            raise DataError(f"dataset '{dataset}' needs a list file for the {split} split (--{split}-list)")
        if num_classes is None:
            num_classes = preset.num_classes
        records = read_list_file(list_file, root=root, num_classes=num_classes)
        if class_names is None and preset.labels_file and num_classes == preset.num_classes:
            class_names = load_label_names(preset.labels_file)
    return VideoDataset(
        records,
        num_segments=num_segments,
        frames_per_segment=frames_per_segment,
        mode=mode,
        num_clips=num_clips,
        transform=transform,
        num_classes=num_classes,
        class_names=class_names,
        frame_template=frame_template or preset.frame_template,
        video_suffixes=preset.video_suffixes,
        **kwargs,
    )


def load_views(
    path: str | os.PathLike,
    model: Any,
    *,
    views: str | Sequence[int] = "1x1",
    input_size: int | None = None,
    full_res: bool = True,
    frame_template: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The test views of one video (file or frame folder), ready for ``model``: float ``[V, T, 3, H, W]``.

    Frames are sampled as in evaluation (``CLIPS`` evenly spaced clips, segment centres for one
    clip) and transformed by :func:`eval_transform` from the model's ``pretrained_cfg``.

    Args:
        path: the video.
        model: anything with ``num_segments``, ``frames_per_segment`` and ``pretrained_cfg``.
        views: ``CLIPSxCROPS`` (``V = CLIPS * CROPS``, clip-major).

    Raises:
        VideoDecodeError: the video cannot be read (no replacement here).

    Example:
        >>> x = load_views("clip.mp4", model, views="1x1")       # [1, T, 3, 224, 224]
        >>> probs = model(x).softmax(-1).mean(0)
    """
    clips, crops = parse_views(views)
    dataset = VideoDataset(
        [VideoRecord(str(path), 0)], num_segments=model.num_segments, frames_per_segment=model.frames_per_segment,
        mode="test", num_clips=clips, frame_template=frame_template, backend=backend,
        transform=eval_transform(model, input_size=input_size, num_crops=crops, full_res=full_res),
    )
    outs = [dataset._apply(clip, 0)[0] for clip in dataset.read_clips(dataset.records[0])]
    return torch.cat([o if o.dim() == 5 else o.unsqueeze(0) for o in outs])
