"""Reading frames from videos and frame folders, behind one small interface.

A *reader* is opened on one video (a file, or a folder of numbered images) and answers two
questions: how many frames it has (``len(reader)``) and the frames at some 0-based indices
(``reader.get_frames(indices)``, uint8 ``[N, H, W, 3]``). Video files use PyAV by default;
frame folders use PIL or torchvision's JPEG decoder. Other decoders plug in with
:func:`register_backend`.

Example:
    >>> frames = read_frames("clip.mp4", [0, 4, 8])           # uint8 [3, H, W, 3]
    >>> frames = read_frames("clip.mp4", [0, 4, 8], layout="TCHW")
    >>> with open_video("frames/00017") as reader:           # a frame folder: 00001.jpg, ...
    ...     n = len(reader)
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .damage import known_length, note_truncated, refuse_images
from .errors import TruncatedVideoError, VideoDecodeError

__all__ = [
    "FRAME_TEMPLATES",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameFolderReader",
    "PyAVReader",
    "TruncatedVideoError",
    "VideoDecodeError",
    "VideoReader",
    "count_frames",
    "detect_frame_template",
    "list_backends",
    "open_video",
    "read_frames",
    "register_backend",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Frame names of the official releases, tried in this order when a folder's template is not given:
# Something-Something V1 ({:05d}.jpg), V2 frames ({:06d}.jpg), TSN/TSM extraction scripts.
FRAME_TEMPLATES = ("{:05d}.jpg", "{:06d}.jpg", "img_{:05d}.jpg", "image_{:05d}.jpg", "{:05d}.png", "{:06d}.png")


@runtime_checkable
class VideoReader(Protocol):
    """What the datasets need from a decoder. ``len(reader)`` is the frame count.

    A reader asked for a frame past the real end of a video that declares more frames than it holds
    raises :class:`TruncatedVideoError` (``len(reader)`` is then the real count); it never invents the
    missing frames. Readers may say what the container declares in ``declared_frames``.
    """

    path: str

    def __len__(self) -> int: ...

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 ``[len(indices), H, W, 3]`` RGB frames at 0-based ``indices`` (repeats allowed)."""
        ...

    def close(self) -> None: ...


class _ReaderBase:
    path: str

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("get_frames needs at least one index")
        if min(indices) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(indices)} for {self.path}")
        return indices


# -- fork safety ---------------------------------------------------------------------------------
# DataLoader workers on Linux are forked from the process that built the loader, and that process has
# often decoded videos already (``ds[0]``, a notebook, a prediction service). A forked child inherits
# the parent's memory but none of its threads, so any object that owns a thread pool and crosses the
# fork waits forever the first time it hands work to that pool (the stuck worker sits in
# ``pthread_cond_wait``, using no CPU). Three pools cross in practice:
#   * PyAV >= 18 caches one swscale converter per Python thread (``av.video.frame._thread_local``) and
#     gives it automatic slice threads: the first RGB conversion in the parent starts them.
#   * a reader's decoder (FFmpeg frame threads), when the reader object itself crosses the fork.
#   * torch's OpenMP pool (libgomp): a parallel ``torch.stack`` of frames in the parent, then one in a
#     plain forked process (DataLoader workers are spared, they run torch with one thread).
# So the readers here (1) convert with tdnzoo's own converter, one per process and thread, created in
# the process that converts, with its thread count set explicitly; (2) notice when they are used in
# another process than the one that opened them and reopen there; (3) assemble frames in NumPy, never
# in torch's thread pool (PyAV < 18, no cached converter, hung on that); and (4) after a fork, the child parks PyAV's cached converter, so even
# ``frame.to_ndarray(format=...)`` elsewhere in the child gets a fresh one. Objects that crossed a fork
# are kept, never freed: freeing them would join threads that do not exist in the child, which hangs
# as well. One converter per process and thread, rather than one per reader, because setting one up
# costs about as much as converting a small frame (measured: 5% of a TDN clip of a 240p VP9 video).
_CROSSED_FORK: list[object] = []
_CONVERTERS: dict[tuple[int, int], object] = {}  # (pid, thread id) -> VideoReformatter; a parent's stay parked


def _rgb_converter():
    """This process and thread's swscale converter (PyAV ``VideoReformatter``)."""
    key = (os.getpid(), threading.get_ident())
    converter = _CONVERTERS.get(key)
    if converter is None:
        from av.video.reformatter import VideoReformatter

        converter = _CONVERTERS[key] = VideoReformatter()
    return converter


def _park_pyav_converter() -> None:
    frame_module = sys.modules.get("av.video.frame")
    local = getattr(frame_module, "_thread_local", None)
    cached = getattr(local, "reformatter", None)
    if cached is not None:
        _CROSSED_FORK.append(cached)
        local.reformatter = None


if hasattr(os, "register_at_fork"):  # POSIX only; spawned processes start clean anyway
    os.register_at_fork(after_in_child=_park_pyav_converter)


def _stack(frames: list[np.ndarray], path: str) -> torch.Tensor:
    """``[N, H, W, 3]`` of same-size frames, copied in NumPy, outside torch's thread pool."""
    if len({f.shape for f in frames}) > 1:
        raise VideoDecodeError(f"frames of {path} differ in size: {sorted({f.shape for f in frames})}", path)
    return torch.from_numpy(np.stack(frames))


@functools.cache  # asked once per process, not for every video a dataset opens
def _reformat_takes_threads() -> bool:
    import av

    return int(av.__version__.split(".")[0]) >= 17  # PyAV 17 added swscale threads (``sws_scale_frame``)


class PyAVReader(_ReaderBase):
    """A video file decoded with PyAV (FFmpeg).

    Frames are decoded sequentially from the start up to the largest index asked for; only the
    requested ones are converted to RGB. ``len(reader)`` is what the container declares until decoding
    finds fewer frames: an index past the real end of a file cut short raises
    :class:`TruncatedVideoError` (warning once per file), and ``len(reader)`` becomes the real count.
    Indices past the declared end of a whole file get its last frame (as the frame folders clamp).

    The reader is safe across ``fork``: it converts to RGB with tdnzoo's swscale context of the process
    and thread that converts (not PyAV's, which crosses a fork), and a reader opened before a fork
    reopens its file in the child (see the fork notes above the class).

    Args:
        path: the video file.
        threads: let FFmpeg decode with frame/slice threads (``"AUTO"``), or ``None`` for its default.
        thread_count: threads of the decoder and of the RGB converter; ``0`` lets FFmpeg use one per CPU.

    Raises:
        VideoDecodeError: the file is missing, not a video (an image, whatever its extension), corrupt,
            or has no video stream.
    """

    def __init__(self, path: str | os.PathLike, *, threads: str | None = "AUTO", thread_count: int = 0) -> None:
        import av

        if thread_count < 0:
            raise ValueError(f"thread_count must be >= 0, got {thread_count}")
        self.path = str(path)
        self.threads, self.thread_count = threads, int(thread_count)
        if not os.path.isfile(self.path):
            raise VideoDecodeError(f"video file not found: {self.path}", self.path)
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
            raise VideoDecodeError(f"cannot open video {self.path}: {exc}", self.path) from exc
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(f"{self.path} has no video stream", self.path)
        try:
            refuse_images(self._container, self.path)
        except VideoDecodeError:
            self._container.close()
            raise
        self._stream = self._container.streams.video[0]
        if threads:
            self._stream.thread_type = threads
        self._stream.codec_context.thread_count = self.thread_count
        self._convert_kwargs = {"threads": self.thread_count} if _reformat_takes_threads() else {}
        self._pid = os.getpid()
        self._num_frames: int | None = None
        self.declared_frames: int | None = None  # what the container says; more than decode when cut short
        self._used = False

    def _reopen_if_forked(self) -> None:
        if self._pid != os.getpid():  # opened before a fork: its decoder and converter threads are not here
            _CROSSED_FORK.append(self._container)
            self.__init__(self.path, threads=self.threads, thread_count=self.thread_count)

    def _to_rgb(self, frame) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB of a decoded frame (a view of the converted frame)."""
        return _rgb_converter().reformat(frame, format="rgb24", **self._convert_kwargs).to_ndarray()

    def __len__(self) -> int:
        self._reopen_if_forked()
        if self._num_frames is None:
            self.declared_frames = self._count()
            self._num_frames = known_length(self.path) or self.declared_frames
        return self._num_frames

    def _count(self) -> int:
        import av

        declared = int(self._stream.frames or 0)
        if declared > 0:  # mp4 and most containers store the exact sample count
            return declared
        # WebM (Something-Something V2) and some AVIs declare nothing: count packets, no decoding.
        try:
            self._rewind()
            count = sum(1 for packet in self._container.demux(self._stream) if packet.size)
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"cannot read {self.path}: {exc}", self.path) from exc
        self._used = True
        if count == 0:
            raise VideoDecodeError(f"{self.path} holds no video frames", self.path)
        return count

    def _rewind(self) -> None:
        if self._used:
            self._container.seek(0, stream=self._stream)

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        import av

        indices = self._check_indices(indices)
        self._reopen_if_forked()
        rows: dict[int, list[int]] = {}  # frame index -> the rows of the clip that show it
        for row, i in enumerate(indices):
            rows.setdefault(i, []).append(row)
        last_wanted = max(indices)
        clip: np.ndarray | None = None
        last_index, last_frame = -1, None
        try:
            self._rewind()
            self._used = True
            for i, frame in enumerate(self._container.decode(self._stream)):
                last_index, last_frame = i, frame
                if i in rows:
                    clip = self._fill(clip, rows[i], frame, len(indices))
                if i >= last_wanted:
                    break
        except av.FFmpegError as exc:
            if last_frame is None:
                raise VideoDecodeError(f"cannot decode {self.path}: {exc}", self.path) from exc
            # Decoding stopped after some frames: the end of a file cut short (FFmpeg raises there
            # when decoding on one thread, and ends quietly with frame threads), handled below.
        except (ValueError, MemoryError) as exc:
            raise VideoDecodeError(f"cannot decode {self.path}: {exc}", self.path) from exc
        if last_frame is None:
            raise VideoDecodeError(f"{self.path} holds no decodable video frames", self.path)
        if last_index < last_wanted:  # asked past the last frame that decodes
            self._stream_ended(last_index + 1)  # raises for a file cut short
            # Past the declared end of a whole file: its last frame, as the frame folders clamp.
            tail = [row for i, same in rows.items() if i > last_index for row in same]
            clip = self._fill(clip, tail, last_frame, len(indices))
        return torch.from_numpy(clip)

    def _fill(self, clip: np.ndarray | None, rows: list[int], frame, length: int) -> np.ndarray:
        """Convert ``frame`` to RGB and copy it into ``rows`` of the clip (allocated at the first frame).

        Each converted frame is copied at once and dropped, so the converter's buffer is reused from
        the heap: holding all of a clip's converted frames until a final stack made the allocator
        return and fault in their pages again for every clip (35% of a 720p TDN clip's time).
        """
        rgb = self._to_rgb(frame)
        if clip is None:
            clip = np.empty((length, *rgb.shape), dtype=np.uint8)
        elif rgb.shape != clip.shape[1:]:
            raise VideoDecodeError(
                f"frames of {self.path} change size: {clip.shape[2]}x{clip.shape[1]}, then {rgb.shape[1]}x{rgb.shape[0]}",
                self.path,
            )
        for row in rows:
            clip[row] = rgb
        return clip

    def _stream_ended(self, decoded: int) -> None:
        """Decoding stopped after ``decoded`` frames: raise if the container declared more."""
        if self.declared_frames is None:
            len(self)  # reads the declared count
        self._num_frames = decoded
        if decoded < self.declared_frames:
            raise note_truncated(self.path, self.declared_frames, decoded)

    def close(self) -> None:
        if self._pid == os.getpid():
            self._container.close()
        else:  # opened before a fork and not used here: closing it would join the parent's decoder threads
            _CROSSED_FORK.append(self._container)


def detect_frame_template(folder: str | os.PathLike, names: Sequence[str] | None = None) -> str:
    """The frame file template of a folder, e.g. ``'{:05d}.jpg'``, from its first frame's name.

    Raises:
        VideoDecodeError: no file matches one of :data:`FRAME_TEMPLATES`.
    """
    names = set(os.listdir(folder) if names is None else names)
    for template in FRAME_TEMPLATES:
        if template.format(1) in names or template.format(0) in names:
            return template
    raise VideoDecodeError(
        f"cannot tell the frame names in {folder}: expected files such as "
        f"{', '.join(t.format(1) for t in FRAME_TEMPLATES)}; pass the template explicitly",
        str(folder),
    )


class FrameFolderReader(_ReaderBase):
    """A folder of numbered RGB images, one per frame (``00001.jpg``, ``00002.jpg``, ...).

    Args:
        path: the folder.
        template: file name template; detected from the folder when ``None``.
        start_index: number of the first frame (1 in the official releases).
        num_frames: frame count when known (from a list file); counted from the folder otherwise.
            A folder holding fewer frames than the list declares raises :class:`TruncatedVideoError`
            when a missing frame is asked for (warning once per folder), as a video file cut short.
        image_backend: ``'pil'`` (Pillow) or ``'torchvision'`` (``torchvision.io.decode_image``).

    Raises:
        VideoDecodeError: the folder is missing or empty, or a frame cannot be read.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        template: str | None = None,
        start_index: int | None = None,
        num_frames: int | None = None,
        image_backend: str = "pil",
    ) -> None:
        self.path = str(path)
        if image_backend not in ("pil", "torchvision"):
            raise ValueError(f"image_backend must be 'pil' or 'torchvision', got {image_backend!r}")
        self.image_backend = image_backend
        if not os.path.isdir(self.path):
            raise VideoDecodeError(f"frame folder not found: {self.path}", self.path)
        names = None
        if template is None or num_frames is None or start_index is None:
            names = set(os.listdir(self.path))
        self.template = template or detect_frame_template(self.path, names)
        if start_index is None:
            start_index = 0 if self.template.format(0) in names and self.template.format(1) not in names else 1
        self.start_index = start_index
        if num_frames is None:
            num_frames = 0
            while self.template.format(self.start_index + num_frames) in names:
                num_frames += 1
        if num_frames <= 0:
            raise VideoDecodeError(f"no frames named like {self.template} in {self.path}", self.path)
        self.declared_frames = int(num_frames)
        self._num_frames = known_length(self.path) or self.declared_frames

    def __len__(self) -> int:
        return self._num_frames

    def frame_path(self, index: int) -> str:
        """File of the 0-based frame ``index``."""
        return os.path.join(self.path, self.template.format(self.start_index + index))

    def _load(self, index: int) -> np.ndarray:
        path = self.frame_path(index)
        try:
            if self.image_backend == "torchvision":
                with warnings.catch_warnings():  # torchvision >= 0.29 deprecates its decoders in favour of torchcodec
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from torchvision.io import ImageReadMode, decode_image, read_file

                    return decode_image(read_file(path), mode=ImageReadMode.RGB).numpy().transpose(1, 2, 0)
            from PIL import Image

            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (OSError, RuntimeError, ValueError, SyntaxError) as exc:
            if not os.path.exists(path):
                self._check_present()  # fewer frames than the list declares: TruncatedVideoError
            raise VideoDecodeError(f"cannot read frame {path}: {exc}", self.path) from exc

    def _check_present(self) -> None:
        """Raise when the folder's frames (from the first, without a gap) are fewer than declared."""
        names = set(os.listdir(self.path))
        present = 0
        while self.template.format(self.start_index + present) in names:
            present += 1
        if 0 < present < self.declared_frames:
            self._num_frames = present
            raise note_truncated(self.path, self.declared_frames, present, stacklevel=5)

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        indices = self._check_indices(indices)
        # Past the end, use the last frame, as the official code clamps its indices.
        cache: dict[int, np.ndarray] = {}
        frames = []
        for i in indices:
            i = min(i, self._num_frames - 1)
            if i not in cache:
                cache[i] = self._load(i)
            frames.append(cache[i])
        return _stack(frames, self.path)


Opener = Callable[..., VideoReader]
_BACKENDS: dict[str, Opener] = {"pyav": PyAVReader, "frames": FrameFolderReader}


def register_backend(name: str, opener: Opener) -> None:
    """Make ``opener(path, **kwargs) -> VideoReader`` available as ``backend=name``.

    Example:
        >>> register_backend("decord", MyDecordReader)
        >>> read_frames("a.mp4", [0, 1], backend="decord")
    """
    _BACKENDS[name] = opener


def list_backends() -> list[str]:
    """Names accepted by ``backend=``."""
    return sorted(_BACKENDS)


def open_video(path: str | os.PathLike, *, backend: str | None = None, **kwargs) -> VideoReader:
    """Open a video file (PyAV) or a frame folder.

    Args:
        path: a video file or a folder of numbered frames.
        backend: a name from :func:`list_backends`; ``None`` picks ``'frames'`` for folders and
            ``'pyav'`` for files.
        **kwargs: passed to the reader (e.g. ``template=``, ``num_frames=`` for frame folders).

    Raises:
        VideoDecodeError: missing, unreadable or corrupt.
    """
    if backend is None:
        backend = "frames" if Path(path).is_dir() else "pyav"
    try:
        opener = _BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown video backend {backend!r}; known: {', '.join(list_backends())}") from None
    return opener(path, **kwargs)


def count_frames(path: str | os.PathLike, *, backend: str | None = None, **kwargs) -> int:
    """Number of frames of a video file or frame folder, as its container (or list file) declares them:
    a file cut short is found out only by decoding it (then this process reports its real count)."""
    with open_video(path, backend=backend, **kwargs) as reader:
        return len(reader)


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    layout: str = "THWC",
    backend: str | None = None,
    **kwargs,
) -> torch.Tensor:
    """uint8 RGB frames at 0-based ``indices`` of a video file or frame folder.

    Args:
        path: a video file or a folder of numbered frames.
        indices: frame indices, any order, repeats allowed.
        layout: ``'THWC'`` (``[T, H, W, 3]``) or ``'TCHW'`` (``[T, 3, H, W]``, torchvision's video layout).
        backend: see :func:`open_video`.

    Raises:
        VideoDecodeError: missing, unreadable or corrupt.
    """
    if layout not in ("THWC", "TCHW"):
        raise ValueError(f"layout must be 'THWC' or 'TCHW', got {layout!r}")
    with open_video(path, backend=backend, **kwargs) as reader:
        frames = reader.get_frames(indices)
    if layout == "TCHW":  # transposed in NumPy: outside torch's thread pool, which a forked process cannot use
        return torch.from_numpy(np.ascontiguousarray(frames.numpy().transpose(0, 3, 1, 2)))
    return frames

