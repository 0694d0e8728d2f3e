"""Tiny generated video data for the data, training and evaluation tests.

Each class has its own look (a bright bar at a class-specific height and colour, moving across
the frames) so that a model can learn the classes in a couple of CPU epochs. Frame ``i`` of a
video also carries its index as the grey level ``12 * i`` of its top-left 8x8 block
(:func:`frame_ids`), to check which frames were read.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def class_frames(label: int, num_frames: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of a video of class ``label``."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, size=(num_frames, height, width, 3), dtype=np.uint8)
    colour = np.array([(255, 40, 40), (40, 255, 40), (40, 40, 255), (255, 255, 40)][label % 4], np.uint8)
    band = height // 4
    top = (label * band) % max(height - band, 1)
    for t in range(num_frames):
        left = (t * width) // max(num_frames, 1)
        frames[t, top : top + band, :, :] = colour // 3
        frames[t, top : top + band, left : left + width // 3, :] = colour
        frames[t, :8, :8, :] = min(t * 12, 255)  # grey, so chroma subsampling keeps it
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, codec: str = "libx264") -> Path:
    """Write uint8 ``[T, H, W, 3]`` frames as a video with PyAV (mpeg4 keeps pixel values closest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0", "preset": "ultrafast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: str | Path, frames: np.ndarray, template: str = "{:05d}.jpg", start: int = 1) -> Path:
    """Write frames as numbered images (PNG keeps exact values; JPEG by the template's extension)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / template.format(start + i), quality=95)
    return folder


def make_folder_dataset(
    root: str | Path,
    *,
    num_classes: int = 2,
    per_class: dict[str, int] | None = None,
    num_frames: int = 12,
    size: tuple[int, int] = (64, 64),
    frame_folders: bool = False,
) -> Path:
    """``root/<split>/class_<k>/<k>_<i>.mp4`` (or frame folders), ``per_class`` videos per split."""
    root = Path(root)
    per_class = per_class or {"train": 3, "val": 2}
    for s, (split, count) in enumerate(per_class.items()):
        for label in range(num_classes):
            for i in range(count):
                frames = class_frames(label, num_frames, *size, seed=1000 * s + 10 * label + i)
                target = root / split / f"class_{label}" / f"{label}_{i}"
                if frame_folders:
                    write_frame_folder(target, frames)
                else:
                    write_video(target.with_suffix(".mp4"), frames)
    return root


def frame_ids(frames) -> list[int]:
    """Indices of frames written by :func:`class_frames`, read back from their grey marker.

    ``frames``: uint8 ``[T, H, W, 3]`` or ``[T, 3, H, W]`` (tensor or array).
    """
    arr = np.asarray(frames).astype(np.float64)
    if arr.shape[-1] != 3:
        arr = arr.transpose(0, 2, 3, 1)
    return [int(round(v / 12)) for v in arr[:, 2:6, 2:6, :].mean(axis=(1, 2, 3))]


def write_cut_video(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """A faststart H.264 MP4 of ``frames`` cut to half its bytes: its index (at the start) still declares
    every frame, but only about half of them decode, as a download that stopped."""
    path = Path(path)
    whole = write_video(path.with_name(path.stem + ".whole.mp4"), frames, fps=fps)
    faststart = path.with_name(path.stem + ".faststart.mp4")
    with av.open(str(whole)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:  # the demuxer's final flush packet carries no data
                packet.stream = out
                dst.mux(packet)
    data = faststart.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    whole.unlink()
    faststart.unlink()
    return path


def decodable_frames(path: str | Path) -> int:
    """Frames of a video file that decode, counted by PyAV alone (decoding stops at the first error)."""
    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(container.streams.video[0]):
                count += 1
        except av.FFmpegError:
            pass
    return count
