"""Live video: a causal model run one segment at a time, each temporal layer with a small cache.

:func:`stream` returns a :class:`Streamer`. Its :meth:`Streamer.step` takes the frames of the next
segment ``[B, F, 3, H, W]`` and returns that segment's logits ``[B, num_classes]``, running the
backbone on the new segment only. Every temporal layer of the causal model reads at most one
segment back, so what it needs from the past is one tensor, kept by a streaming twin of the layer:

- the shift (:class:`StreamingShift`): channels ``[0, fold)`` of the previous segment's input;
- the temporal conv (:class:`StreamingTemporalConv`): the previous segment's input;
- L-TDM (:class:`StreamingLongTermTDM`): ``conv_neighbor(b)`` of the previous segment.

The streamer runs a copy of the model (parameters and buffers shared, not copied) that takes one
segment per clip and holds these twins in place of the temporal layers; the offline model is left
as it is. Each twin's cache is a buffer: empty (``None``) at the start of a stream, where the
offline model pads with zeros, and updated in place afterwards, so the steps after the first have
one fixed graph that ``torch.compile(fullgraph=True)`` compiles (the first step of each stream runs
eagerly and allocates the caches).

Exactness: step ``k`` equals ``model.forward_segments(clip)[:, k]`` of the causal model run on the
first ``N > k`` segments at once (eval mode: BatchNorm then normalises each frame on its own).
"""
from __future__ import annotations

import copy
import itertools
from collections import deque
from typing import Any

import torch
from torch import nn

from ..layers import LongTermTDM, SegmentConsensus, ShortTermTDM, TemporalConv, TemporalShift
from .causal import TEMPORAL_LAYERS, is_causal
from .video import VideoClassifier

__all__ = ["StreamingLayer", "StreamingLongTermTDM", "StreamingShift", "StreamingTemporalConv", "Streamer", "stream"]


class StreamingLayer(nn.Module):
    """A temporal layer on one segment per clip ``[B, C, H, W]``, with its cache of the previous segment."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("previous", None, persistent=False)

    def remember(self, value: torch.Tensor) -> None:
        """Keep ``value`` for the next step (in place once the cache exists: a fixed graph for torch.compile)."""
        if self.previous is None:
            self.previous = value.detach().clone()
        else:
            self.previous.copy_(value)

    def reset(self) -> None:
        """Forget the past: the next step is the first segment of a stream."""
        self.previous = None

    def cache_bytes(self) -> int:
        return 0 if self.previous is None else self.previous.numel() * self.previous.element_size()


class StreamingShift(StreamingLayer):
    """Causal :class:`~tdnzoo.layers.TemporalShift`: channels ``[0, fold)`` come from the previous segment."""

    def __init__(self, shift: TemporalShift) -> None:
        super().__init__()
        self.fold_div = shift.fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = x.shape[1] // self.fold_div
        previous = self.previous if self.previous is not None else torch.zeros_like(x[:, :fold])
        out = torch.cat((previous, x[:, fold:]), dim=1)
        self.remember(x[:, :fold])
        return out


class StreamingTemporalConv(StreamingLayer):
    """Causal :class:`~tdnzoo.layers.TemporalConv`: ``w0 * x[t-1] + w1 * x[t]``, ``x[t-1]`` from the cache."""

    def __init__(self, conv: TemporalConv) -> None:
        super().__init__()
        self.conv = conv  # for its weight (shared with the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0, w1, _ = self.conv.taps(x.dtype)
        previous = self.previous if self.previous is not None else torch.zeros_like(x)
        out = w0 * previous + w1 * x
        self.remember(x)
        return out


class StreamingLongTermTDM(StreamingLayer):
    """Causal :class:`~tdnzoo.layers.LongTermTDM`: ``d_b = conv_neighbor(b)[t-1] - b[t]``, the first from the cache."""

    def __init__(self, ltdm: LongTermTDM) -> None:
        super().__init__()
        self.ltdm = ltdm  # its convolutions and BatchNorms (shared with the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, neighbor = self.ltdm.bottleneck(x)
        # No previous segment: the difference is zero (not -b), as the offline module pads.
        d_backward = self.previous - b if self.previous is not None else torch.zeros_like(b)
        self.remember(neighbor)
        return x + x * self.ltdm.attention(d_backward)


def streaming_layer(layer: nn.Module) -> StreamingLayer:
    """The streaming twin of a causal temporal layer."""
    if not getattr(layer, "causal", False):
        raise ValueError(f"{type(layer).__name__} is not causal: it reads later segments and cannot stream")
    if isinstance(layer, TemporalShift):
        return StreamingShift(layer)
    if isinstance(layer, TemporalConv):
        return StreamingTemporalConv(layer)
    if isinstance(layer, LongTermTDM):
        return StreamingLongTermTDM(layer)
    raise TypeError(f"{type(layer).__name__} is not a tdnzoo temporal layer")


class SegmentStep(nn.Module):
    """One segment of each clip ``[B, F, 3, H, W]`` -> its logits ``[B, num_classes]``.

    Holds a copy of the model sharing its parameters and buffers, set to one segment per clip, with
    each temporal layer replaced by its streaming twin. This is the module ``torch.compile`` compiles.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        step = copy.deepcopy(model, memo=shared)
        for parent in list(step.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, TEMPORAL_LAYERS):
                    setattr(parent, name, streaming_layer(child))
        # One segment per call: the clip checks and S-TDM's batch check see clips of one segment.
        for module in step.modules():
            if isinstance(module, (VideoClassifier, ShortTermTDM, SegmentConsensus)):
                module.num_segments = 1
        self.model = step.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.forward_segments(frames)[:, 0]


class Streamer:
    """Runs a causal video model on a live stream, one segment per :meth:`step`.

    Args:
        model: a causal tdnzoo model (``create_model(name, causal=True)``; any TSN), already fused
            for inference if wanted; its weights are shared, not copied.
        window: step logits averaged by :meth:`prediction` (default: the model's ``num_segments``).
        compile: run the steps after each stream's first through ``torch.compile(fullgraph=True)``.
        compile_options: more keyword arguments for ``torch.compile`` (``mode``, ``backend``, ...).
    """

    def __init__(self, model: nn.Module, *, window: int | None = None, compile: bool = False,
                 compile_options: dict[str, Any] | None = None) -> None:
        if not isinstance(model, VideoClassifier):
            raise TypeError(f"expected a tdnzoo VideoClassifier, got {type(model).__name__}")
        if not is_causal(model):
            raise ValueError(
                f"{getattr(model, 'method', '?')} model '{getattr(model, 'backbone_name', '?')}' is not causal: its "
                "temporal layers read later segments. Build it with create_model(name, causal=True) to stream it."
            )
        self.frames_per_segment = int(model.frames_per_segment)
        self.in_chans = int(getattr(model, "in_chans", 3))
        self.min_size = int(getattr(model, "min_size", 1))
        self.window = int(window or model.num_segments)
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self.segment_step = SegmentStep(model)
        self.layers = [m for m in self.segment_step.modules() if isinstance(m, StreamingLayer)]
        options = {"fullgraph": True, **(compile_options or {})}
        self.compiled = torch.compile(self.segment_step, **options) if compile else None
        self.history: deque[torch.Tensor] = deque(maxlen=self.window)
        self.frame_shape: tuple[int, ...] | None = None
        self.steps = 0

    def reset(self) -> None:
        """Start a new stream: caches and the prediction window emptied."""
        for layer in self.layers:
            layer.reset()
        self.history.clear()
        self.frame_shape = None
        self.steps = 0

    def _check(self, frames: torch.Tensor) -> None:
        expected = f"[B, {self.frames_per_segment}, {self.in_chans}, H, W] (the frames of one segment)"
        if frames.dim() != 5 or frames.shape[1] != self.frames_per_segment or frames.shape[2] != self.in_chans:
            raise ValueError(f"expected {expected}, got shape {tuple(frames.shape)}")
        if self.frame_shape is not None and tuple(frames.shape) != self.frame_shape:
            raise ValueError(
                f"this stream's segments are {self.frame_shape}, got {tuple(frames.shape)}: call reset() to start "
                "a stream of another batch or frame size"
            )

    @torch.no_grad()
    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """The logits ``[B, num_classes]`` of the next segment, from its frames ``[B, F, 3, H, W]``."""
        self._check(frames)
        first = self.frame_shape is None
        run = self.segment_step if first or self.compiled is None else self.compiled
        logits = run(frames)
        if not first and self.compiled is not None:
            logits = logits.clone()  # a compiled graph may reuse its output buffer on the next call
        self.frame_shape = tuple(frames.shape)
        self.history.append(logits)
        self.steps += 1
        return logits

    def prediction(self) -> torch.Tensor:
        """The live prediction ``[B, num_classes]``: the mean of the last ``window`` step logits."""
        if not self.history:
            raise RuntimeError("no segment streamed yet: call step() first")
        return torch.stack(tuple(self.history)).mean(dim=0)

    def cache_bytes(self) -> int:
        """Memory held by the temporal layers' caches (0 before the first step)."""
        return sum(layer.cache_bytes() for layer in self.layers)


def stream(model: nn.Module, *, window: int | None = None, compile: bool = False,
           compile_options: dict[str, Any] | None = None) -> Streamer:
    """A :class:`Streamer` running the causal ``model`` one segment at a time.

    Example:
        >>> model = tdnzoo.create_model("tsm_resnet50", causal=True).eval()
        >>> live = tdnzoo.stream(model)
        >>> for frames in segments:  # each [1, F, 3, 224, 224]  # doctest: +SKIP
        ...     logits = live.step(frames)
        ...     label = live.prediction().argmax(-1)
    """
    return Streamer(model, window=window, compile=compile, compile_options=compile_options)
