"""Video data: decoding, TSN frame sampling, clip transforms and datasets.

The pieces, each usable alone:

* :mod:`tdnzoo.data.decode`: ``open_video``, ``read_frames``, ``count_frames`` (PyAV for files,
  PIL/torchvision for frame folders; ``register_backend`` for others).
* :mod:`tdnzoo.data.damage`: ``read_sampled`` (a video cut short is sampled within the frames it holds,
  ``TruncatedVideoWarning`` once per file), ``refuse_images`` (an image renamed as a video is refused).
* :mod:`tdnzoo.data.sampling`: ``train_indices``, ``val_indices``, ``multi_clip_indices`` (official rules).
* :mod:`tdnzoo.data.transforms`: ``MultiScaleCrop``, ``RandomHorizontalFlip`` (label swap),
  ``ThreeCrop``, ``train_transform``, ``eval_transform``, ``parse_views``.
* :mod:`tdnzoo.data.datasets`: ``VideoDataset``, ``build_dataset`` (folder, sthv1, sthv2, kinetics),
  ``load_views`` (the test views of one video, for prediction).
* :mod:`tdnzoo.data.workers`: ``watched_loader`` (a DataLoader with a deadline per batch) and
  ``WorkerTimeoutError`` (a stuck worker, named with its video).
"""
from .damage import SampledFrames, TruncatedVideoWarning, read_sampled
from .datasets import (
    DATASET_PRESETS,
    CorruptVideoWarning,
    DatasetPreset,
    Sample,
    VideoDataset,
    VideoRecord,
    build_dataset,
    load_label_names,
    load_views,
    read_list_file,
    scan_folder,
)
from .decode import (
    VIDEO_EXTENSIONS,
    FrameFolderReader,
    PyAVReader,
    VideoReader,
    count_frames,
    list_backends,
    open_video,
    read_frames,
    register_backend,
)
from .errors import DataError, TruncatedVideoError, VideoDecodeError
from .sampling import multi_clip_indices, train_indices, val_indices
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFFICIAL_SCALES,
    SOMETHING_FLIP_LABEL_MAP,
    MultiScaleCrop,
    RandomHorizontalFlip,
    ThreeCrop,
    eval_transform,
    parse_views,
    train_transform,
)
from .workers import DEFAULT_WORKER_TIMEOUT_S, WorkerTimeoutError, watched_loader

__all__ = [
    "DATASET_PRESETS",
    "DEFAULT_WORKER_TIMEOUT_S",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFICIAL_SCALES",
    "SOMETHING_FLIP_LABEL_MAP",
    "VIDEO_EXTENSIONS",
    "CorruptVideoWarning",
    "DataError",
    "DatasetPreset",
    "FrameFolderReader",
    "MultiScaleCrop",
    "PyAVReader",
    "RandomHorizontalFlip",
    "Sample",
    "SampledFrames",
    "ThreeCrop",
    "TruncatedVideoError",
    "TruncatedVideoWarning",
    "VideoDataset",
    "VideoDecodeError",
    "VideoReader",
    "VideoRecord",
    "WorkerTimeoutError",
    "build_dataset",
    "count_frames",
    "eval_transform",
    "list_backends",
    "load_label_names",
    "load_views",
    "open_video",
    "parse_views",
    "read_frames",
    "read_list_file",
    "read_sampled",
    "register_backend",
    "scan_folder",
    "multi_clip_indices",
    "train_indices",
    "train_transform",
    "val_indices",
    "watched_loader",
]
