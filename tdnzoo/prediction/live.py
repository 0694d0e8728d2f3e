"""Live prediction: frames read as they come from a file, a pipe or a device, labelled segment by segment.

A causal model (``create_model(name, causal=True)``) runs through :func:`tdnzoo.stream`: each new
segment costs one backbone pass, and the label is the softmax of the mean of the last ``window``
segments' logits (default: the model's ``num_segments``).

- :class:`LiveSource` opens the source with PyAV and hands out frames in order, with their time:
  a video file, ``-`` for standard input (e.g. ``ffmpeg ... -f mpegts pipe:1``: no seeking, no
  frame count), or any URL or device PyAV opens (``rtsp://...``; ``/dev/video0`` with
  ``input_format='v4l2'``). Every read has a deadline (``timeout``): standard input is read through
  ``select``, URLs and devices through FFmpeg's I/O timeout.
- :func:`sample_segments` takes ``frames_per_segment`` consecutive frames every ``1 / segment_fps``
  seconds of stream time.
- :class:`LivePredictor` transforms a segment as the model's test views (one centre crop) and steps
  the streamer.
"""
from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.errors import VideoDecodeError
from ..errors import TdnzooError
from ..models.streaming import stream
from .spec import ViewSpec

__all__ = ["LivePrediction", "LivePredictor", "LiveSource", "StreamTimeoutError", "sample_segments"]


class StreamTimeoutError(TdnzooError, TimeoutError):
    """The source gave no data within the read timeout."""


_POLL_SECONDS = 0.1  # how soon a stop request (Ctrl-C) is seen while waiting for data


class _DeadlineReader:
    """A file descriptor read with a deadline on every wait; what PyAV reads standard input through.

    No ``seek``: PyAV then treats it as the pipe it is. Exceptions raised inside PyAV's read
    callback do not reliably come out of FFmpeg (a Ctrl-C there was lost), so a timeout or a
    ``stop`` request ends the input (an empty read) and is recorded for :meth:`LiveSource.frames`.
    """

    def __init__(self, fd: int, timeout: float, name: str, stop: threading.Event) -> None:
        self.fd, self.timeout, self.name, self.stop = fd, timeout, name, stop
        self.timed_out: StreamTimeoutError | None = None

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 1 << 16
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and self.timed_out is None:  # after either, FFmpeg's retries end at once
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = StreamTimeoutError(f"no data from {self.name} for {self.timeout:g} s")
                return b""
            ready, _, _ = select.select([self.fd], [], [], min(left, _POLL_SECONDS))
            if ready:
                return os.read(self.fd, size)
        return b""


@dataclass
class LiveSource:
    """Frames of a live source, in decode order, with their time in seconds from the first frame.

    Args:
        source: a path, ``-`` (standard input), or a URL or device PyAV opens.
        timeout: seconds any read may wait for data.
        input_format: FFmpeg demuxer (``mpegts``, ``v4l2``, ...) when it cannot be guessed.
        fps: frame rate to time frames by when the source has no timestamps.

    ``stop``: set it (e.g. from a SIGINT handler) to end :meth:`frames` with ``KeyboardInterrupt``
    at the next frame or, while waiting on standard input, within 0.1 s.
    """

    source: str
    timeout: float = 10.0
    input_format: str | None = None
    fps: float | None = None
    frames_read: int = field(default=0, init=False)
    stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _reader: _DeadlineReader | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"the read timeout must be > 0 s, got {self.timeout}")

    def _open(self):
        import av

        try:
            if self.source == "-":
                self._reader = _DeadlineReader(sys.stdin.fileno(), self.timeout, "standard input", self.stop)
                return av.open(self._reader, mode="r", format=self.input_format)
            if os.path.isfile(self.source):
                return av.open(self.source, mode="r", format=self.input_format)
            return av.open(self.source, mode="r", format=self.input_format, timeout=(self.timeout, self.timeout))
        except StreamTimeoutError:
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._raise_timeout()
            raise VideoDecodeError(f"cannot open {self.name}: {exc}", self.source) from exc

    def _raise_timeout(self) -> None:
        """Raise what ended the input early: a stop request or the read timeout."""
        if self.stop.is_set():
            raise KeyboardInterrupt
        if self._reader is not None and self._reader.timed_out is not None:
            raise self._reader.timed_out

    @property
    def name(self) -> str:
        return "standard input" if self.source == "-" else self.source

    def frames(self) -> Iterator[tuple[float, Any]]:
        """``(seconds since the first frame, av.VideoFrame)`` until the source ends.

        Raises:
            StreamTimeoutError: no data within the timeout.
            KeyboardInterrupt: ``stop`` was set.
            VideoDecodeError: the source cannot be opened or breaks off (with the frames read so far).
        """
        import av

        container = self._open()
        with container:
            if not container.streams.video:
                raise VideoDecodeError(f"{self.name} has no video stream", self.source)
            video = container.streams.video[0]
            rate = self.fps or float(video.average_rate or video.guessed_rate or 0) or None
            first: float | None = None
            try:
                for frame in container.decode(video):
                    if self.stop.is_set():
                        raise KeyboardInterrupt
                    if frame.time is not None:
                        first = frame.time if first is None else first
                        seconds = frame.time - first
                    elif rate:
                        seconds = self.frames_read / rate
                    else:
                        raise VideoDecodeError(f"{self.name} gives frames without timestamps or frame rate: "
                                               "pass its frame rate (--fps)", self.source)
                    self.frames_read += 1
                    yield seconds, frame
            except StreamTimeoutError:
                raise
            except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
                self._raise_timeout()
                raise VideoDecodeError(f"{self.name} broke off after {self.frames_read} frames: {exc}",
                                       self.source) from exc
            self._raise_timeout()  # FFmpeg ended the input on the failed read


def sample_segments(
    frames: Iterator[tuple[float, Any]], *, segment_fps: float, frames_per_segment: int = 1
) -> Iterator[tuple[float, list[Any]]]:
    """``(start time, frames)``: ``frames_per_segment`` consecutive frames every ``1 / segment_fps`` s.

    A segment starts at the first frame at or after each tick of the ``1 / segment_fps`` grid; ticks
    the source skipped (a gap, a slow source) are dropped, not filled. A segment cut short by the
    end of the source is dropped.
    """
    if segment_fps <= 0:
        raise ValueError(f"--segment-fps must be > 0, got {segment_fps}")
    period = 1.0 / segment_fps
    tick, start, taken = 0.0, 0.0, []
    for seconds, frame in frames:
        if not taken:
            if seconds + 1e-6 < tick:
                continue
            start = seconds
            while tick <= seconds + 1e-6:
                tick += period
        taken.append(frame)
        if len(taken) == frames_per_segment:
            yield start, taken
            taken = []


@dataclass
class LivePrediction:
    """One step: the label of the stream so far (mean of the window's segments) and what it cost."""

    step: int
    time: float
    label: str
    score: float
    top_k: list[dict[str, Any]]
    latency_ms: float
    segments: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LivePredictor:
    """Steps a causal model's streamer on each segment's frames and names the live prediction.

    Args:
        model: a causal tdnzoo model in eval mode (on ``device``).
        spec: sizes and normalisation of its input (:func:`~tdnzoo.prediction.resolve_view_spec`, one crop).
        names: class names.
        top_k: classes listed per step.
        window: segments averaged (default: the model's ``num_segments``).
    """

    def __init__(self, model: nn.Module, spec: ViewSpec, names: Sequence[str], *, top_k: int = 5,
                 window: int | None = None, device: torch.device | str = "cpu") -> None:
        if spec.crops != 1:
            raise ValueError(f"live prediction takes one crop per frame, got views {spec.views}")
        self.streamer = stream(model, window=window)
        self.transform = spec.transform()
        self.names = list(names)
        self.top_k = min(top_k, len(self.names))
        self.device = torch.device(device)
        self.steps = 0

    def step(self, frames: Sequence[Any], seconds: float) -> LivePrediction:
        """The prediction after the segment of ``frames`` (``av.VideoFrame`` or uint8 ``[H, W, 3]`` arrays)."""
        began = time.perf_counter()
        pixels = torch.stack([torch.as_tensor(_rgb(f)) for f in frames]).permute(0, 3, 1, 2)
        segment = self.transform(pixels).unsqueeze(0).to(self.device)
        self.streamer.step(segment)
        probs = self.streamer.prediction()[0].float().softmax(-1)
        scores, indices = probs.topk(self.top_k)
        latency = (time.perf_counter() - began) * 1e3
        top = [{"label": self.names[i], "score": round(float(s), 4)} for s, i in zip(scores.tolist(), indices.tolist())]
        prediction = LivePrediction(step=self.steps, time=round(seconds, 3), label=top[0]["label"],
                                    score=top[0]["score"], top_k=top, latency_ms=round(latency, 2),
                                    segments=len(self.streamer.history))
        self.steps += 1
        return prediction


def _rgb(frame: Any) -> Any:
    return frame.to_ndarray(format="rgb24") if hasattr(frame, "to_ndarray") else frame
