"""Loader throughput: decoded clips per second of tdnzoo's reader, next to decord and torchcodec.

``tdnzoo bench loader`` generates the videos a video-recognition loader meets (Kinetics-like H.264
at 256p and 720p with a keyframe every 250 frames, Something-Something V2-like VP9 WebM at 240p, a
Something-Something V1-like folder of JPEG frames), then times whole clips as a dataset item reads
them: open the video, read the clip's frames as uint8 RGB ``[T, H, W, 3]``, close. Clips use TSN
(8 segments x 1 frame) and TDN (8 x 5) training sampling with a fixed seed, so every backend reads
the same frames. "1 thread" gives every decoder one thread; "all cores" lets each use one per CPU
(FFmpeg's automatic count). Backends are timed interleaved in one process: each clip is read once
per round by every backend in turn, and a backend's clips/s comes from its fastest read of each
clip over the rounds (other processes on a shared machine only ever add time). With one thread the
clock is the process's CPU time (all its threads), which other processes do not inflate; with all
cores it is wall time, so those rows need a quiet machine. The report gives
each backend's clips/s and tdnzoo's ratio to the fastest other decoder on the same file.

decord and torchcodec are optional (``pip install tdnzoo[decoders]``); rows for backends that are
not installed are left out. Frame folders are read by tdnzoo (Pillow, and torchvision's JPEG
decoder): decord and torchcodec read video files only.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.decode import FrameFolderReader, PyAVReader
from ..data.sampling import train_indices

__all__ = [
    "LOADER_FILES",
    "SAMPLINGS",
    "LoaderFile",
    "LoaderResult",
    "available_backends",
    "run_loader_benchmark",
    "write_frame_folder",
    "write_loader_report",
    "write_video",
]

SAMPLINGS = {"TSN 8x1": (8, 1), "TDN 8x5": (8, 5)}


@dataclass(frozen=True)
class LoaderFile:
    """One generated input: a video file (``codec``) or a JPEG frame folder (``codec='jpeg'``)."""

    name: str
    codec: str
    width: int
    height: int
    num_frames: int
    fps: int = 25
    keyframe_interval: int = 250

    @property
    def filename(self) -> str:
        return {"h264": f"{self.name}.mp4", "vp9": f"{self.name}.webm", "jpeg": self.name}[self.codec]


# Kinetics clips are 10 s; Something-Something V2 videos are WebM (VP9) at 240p, 12 fps, a few seconds;
# V1 ships JPEG frames 100 px high. Widths are multiples of 32: torchcodec (0.17, on FFmpeg 5.1) converts
# other widths to RGB through an FFmpeg filter graph, about 15x slower per frame (448 px: 0.5 ms,
# 456 px: 7.7 ms at 256p), and the comparison should be with each decoder at its best.
LOADER_FILES = (
    LoaderFile("h264_256p", "h264", 448, 256, 250),
    LoaderFile("h264_720p", "h264", 1280, 720, 250),
    LoaderFile("vp9_240p", "vp9", 416, 240, 48, fps=12),
    LoaderFile("jpeg_100p", "jpeg", 176, 100, 48, fps=12),
)


def _frames(width: int, height: int, num_frames: int, seed: int):
    """Camera-like frames: a smooth textured scene panning slowly, a moving object, sensor noise."""
    rng = np.random.default_rng(seed)
    margin = num_frames + 8
    small = rng.integers(0, 256, ((height + 2 * margin) // 8 + 2, (width + 2 * margin) // 8 + 2, 3), dtype=np.uint8)
    scene = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1).astype(np.float32)
    scene = (scene + np.roll(scene, 4, axis=0) + np.roll(scene, 4, axis=1) + np.roll(scene, (4, 4), axis=(0, 1))) / 4
    scene = scene.astype(np.uint8)
    side = max(height // 5, 8)
    for t in range(num_frames):
        y, x = margin - t // 2, margin - t
        frame = scene[y : y + height, x : x + width].copy()
        left = (t * 7) % max(width - side, 1)
        top = height // 3
        frame[top : top + side, left : left + side] = (230, 60, 40)
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_video(
    path: str | os.PathLike,
    *,
    width: int,
    height: int,
    num_frames: int,
    codec: str = "h264",
    fps: int = 25,
    keyframe_interval: int = 250,
    seed: int = 0,
) -> Path:
    """Write a generated camera-like video with PyAV: H.264 (``.mp4``) or VP9 (``.webm``).

    ``keyframe_interval`` is the GOP length: real cameras and encoders put seconds between keyframes,
    so a reader decodes long runs of predicted frames.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        if codec == "h264":
            stream = container.add_stream("libx264", rate=fps)
            stream.options = {"preset": "veryfast", "crf": "23", "g": str(keyframe_interval),
                              "keyint_min": str(keyframe_interval), "sc_threshold": "0"}
        elif codec == "vp9":
            stream = container.add_stream("libvpx-vp9", rate=fps)
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0",
                              "g": str(keyframe_interval)}
        else:
            raise ValueError(f"codec must be 'h264' or 'vp9', got {codec!r}")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = keyframe_interval
        for image in _frames(width, height, num_frames, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(
    path: str | os.PathLike, *, width: int, height: int, num_frames: int, quality: int = 90, seed: int = 0
) -> Path:
    """Write generated frames as ``00001.jpg, 00002.jpg, ...`` (Something-Something V1's layout)."""
    from PIL import Image

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(_frames(width, height, num_frames, seed), start=1):
        Image.fromarray(image).save(path / f"{i:05d}.jpg", quality=quality)
    return path


def make_files(root: str | os.PathLike, files: Sequence[LoaderFile] = LOADER_FILES) -> dict[str, Path]:
    """Generate the benchmark's inputs under ``root`` (kept: a second run reuses them)."""
    root = Path(root)
    out = {}
    for f in files:
        target = root / f.filename
        if not target.exists():
            tmp = root / f"tmp_{f.filename}"
            if f.codec == "jpeg":
                write_frame_folder(tmp, width=f.width, height=f.height, num_frames=f.num_frames)
            else:
                write_video(tmp, width=f.width, height=f.height, num_frames=f.num_frames, codec=f.codec, fps=f.fps,
                            keyframe_interval=f.keyframe_interval)
            tmp.rename(target)
        out[f.name] = target
    return out


# -- backends: (path, indices, threads) -> uint8 [T, H, W, 3] ---------------------------------------
Reader = Callable[[str, list[int], int], torch.Tensor]


def _tdnzoo_pyav(path: str, indices: list[int], threads: int) -> torch.Tensor:
    with PyAVReader(path, thread_count=threads) as reader:
        return reader.get_frames(indices)


def _tdnzoo_frames(image_backend: str) -> Reader:
    def read(path: str, indices: list[int], threads: int) -> torch.Tensor:
        with FrameFolderReader(path, image_backend=image_backend) as reader:
            return reader.get_frames(indices)

    return read


def _decord(path: str, indices: list[int], threads: int) -> torch.Tensor:
    import decord

    reader = decord.VideoReader(path, num_threads=threads)
    return torch.from_numpy(reader.get_batch(indices).asnumpy())


def _torchcodec(path: str, indices: list[int], threads: int) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=threads, seek_mode="approximate")
    return decoder.get_frames_at(indices).data


def available_backends() -> dict[str, Reader]:
    """Video backends that import here: tdnzoo's PyAV reader always, decord and torchcodec when installed."""
    backends: dict[str, Reader] = {"tdnzoo": _tdnzoo_pyav}
    for name, module, read in (("decord", "decord", _decord), ("torchcodec", "torchcodec.decoders", _torchcodec)):
        try:
            __import__(module)
        except Exception:  # not installed, or its FFmpeg libraries are missing  # noqa: BLE001
            continue
        backends[name] = read
    return backends


@dataclass
class LoaderResult:
    """Clips/s of one backend on one file, sampling and thread setting: from each clip's fastest read over the
    rounds (``rounds``: the clips/s of each whole round, for the spread)."""

    file: str
    sampling: str
    threads: str
    backend: str
    clips_per_s: float
    rounds: list[float] = field(default_factory=list)


def _clip_indices(num_frames: int, segments: int, per_segment: int, clips: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [train_indices(num_frames, segments, per_segment, generator=generator) for _ in range(clips)]


def run_loader_benchmark(
    root: str | os.PathLike,
    *,
    files: Sequence[LoaderFile] = LOADER_FILES,
    samplings: Sequence[str] = tuple(SAMPLINGS),
    threads: Sequence[int] = (1, 0),
    clips: int = 4,
    rounds: int = 5,
    backends: dict[str, Reader] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[LoaderResult]:
    """Time every backend on every generated file (see the module doc).

    Args:
        root: folder of the generated inputs (made when missing).
        threads: decoder threads: ``1``, and ``0`` for one per CPU.
        clips: clips per round and backend (different random offsets, the same for every backend).
        rounds: timed rounds; backends alternate within each round.
        backends: video backends by name (default: :func:`available_backends`).
        log: called with a line per result.

    Returns:
        one :class:`LoaderResult` per file, sampling, thread setting and backend.
    """
    paths = make_files(root, files)
    video_backends = available_backends() if backends is None else backends
    results: list[LoaderResult] = []
    for f in files:
        path = str(paths[f.name])
        if f.codec == "jpeg":
            candidates = {"tdnzoo": _tdnzoo_frames("pil"), "tdnzoo-torchvision": _tdnzoo_frames("torchvision")}
        else:
            candidates = dict(video_backends)
        for sampling in samplings:
            segments, per_segment = SAMPLINGS[sampling]
            clip_list = _clip_indices(f.num_frames, segments, per_segment, clips, seed=len(results))
            for count in threads:
                label = "1 thread" if count == 1 else ("all cores" if count == 0 else f"{count} threads")
                # One thread: the process's CPU time, what one core delivers whatever else the machine runs
                # (decoders' helper threads count too); more threads: wall time.
                clock = time.process_time if count == 1 else time.perf_counter
                # Each clip is timed alone, backends in turn, and each keeps its fastest read of every
                # clip over the rounds: on a shared machine the other processes only ever add time, so
                # the minimum is what the decoder itself takes, and it holds still from run to run.
                best = {name: [float("inf")] * len(clip_list) for name in candidates}
                per_round: dict[str, list[float]] = {name: [] for name in candidates}
                for read in candidates.values():  # warm-up: imports, first open
                    read(path, clip_list[0], count)
                order = list(candidates)
                for r in range(rounds):
                    spent = dict.fromkeys(order, 0.0)
                    for c, indices in enumerate(clip_list):
                        for name in order[r % len(order):] + order[: r % len(order)]:  # rotate who goes first
                            start = clock()
                            candidates[name](path, indices, count)
                            took = clock() - start
                            best[name][c] = min(best[name][c], took)
                            spent[name] += took
                    for name in order:
                        per_round[name].append(len(clip_list) / spent[name])
                for name in order:
                    results.append(LoaderResult(f.name, sampling, label, name, len(clip_list) / sum(best[name]),
                                                per_round[name]))
                    if log is not None:
                        log(f"{f.name:10s} {sampling} {label:9s} {name:18s} {results[-1].clips_per_s:8.2f} clips/s")
    return results


def write_loader_report(results: list[LoaderResult], output: str | os.PathLike, *, command: str = "") -> Path:
    """``loader.md`` (a table per sampling: clips/s per file, thread setting and backend) and ``loader.json``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    backends = list(dict.fromkeys(r.backend for r in results))
    lines = [
        "# Loader throughput: decoded clips/s",
        "",
        f"`{command}` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}. Clips/s from each clip's fastest read over the rounds (1 thread: per "
        "second of the process's CPU time; all cores: per second of wall time); ratio: tdnzoo over the "
        "fastest other decoder.",
        "",
    ]
    for sampling in dict.fromkeys(r.sampling for r in results):
        lines += [f"## {sampling}", "", "| file | threads | " + " | ".join(backends) + " | tdnzoo / fastest other |",
                  "|---|---|" + "---:|" * (len(backends) + 1)]
        keys = dict.fromkeys((r.file, r.threads) for r in results if r.sampling == sampling)
        for file, threads in keys:
            row = {r.backend: r.clips_per_s for r in results if (r.sampling, r.file, r.threads) == (sampling, file, threads)}
            others = [v for k, v in row.items() if not k.startswith("tdnzoo")]
            ratio = f"{row['tdnzoo'] / max(others):.2f}" if others and "tdnzoo" in row else "-"
            cells = [f"{row[b]:.2f}" if b in row else "-" for b in backends]
            lines.append(f"| {file} | {threads} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    (output / "loader.md").write_text("\n".join(lines), encoding="utf-8")
    (output / "loader.json").write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
    return output / "loader.md"
