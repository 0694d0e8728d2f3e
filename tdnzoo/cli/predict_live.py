"""``tdnzoo predict --stream SOURCE``: live labels of a file, a pipe or a device (:mod:`tdnzoo.prediction.live`).

One line per segment on stdout (``--json``: JSON lines) as it arrives; how the stream ended on
stderr. Exit status: 0 when the source ended, 1 when it broke off, timed out or gave no segment,
130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from ._args import positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live video (--stream)")
    g.add_argument("--stream", default=None, metavar="SOURCE",
                   help="label a live source segment by segment with a causal model: a video file, '-' for standard "
                   "input (e.g. ffmpeg ... -f mpegts pipe:1), or a URL or device PyAV opens (rtsp://..., /dev/video0)")
    g.add_argument("--segment-fps", type=positive_float, default=4.0,
                   help="segments per second of stream time (default 4: 8 segments span 2 s)")
    g.add_argument("--read-timeout", type=positive_float, default=10.0,
                   help="seconds to wait for data before giving the source up (default 10)")
    g.add_argument("--input-format", default=None, help="FFmpeg demuxer of the source, e.g. mpegts, v4l2 (default: probed)")
    g.add_argument("--stream-window", type=positive_int, default=None, metavar="N",
                   help="segments averaged into each live label (default: the model's num_segments)")


def _say(message: str) -> None:
    print(f"tdnzoo predict: {message}", file=sys.stderr, flush=True)


def run_live(args: argparse.Namespace) -> int:
    """The ``--stream`` mode of ``tdnzoo predict``."""
    from ..data.errors import VideoDecodeError
    from ..models.causal import is_causal
    from ..prediction import class_names_of, load_predict_model, resolve_view_spec
    from ..prediction.live import LivePredictor, LiveSource, StreamTimeoutError, sample_segments
    from ..prediction.loading import default_device

    if args.videos:
        raise ValueError(f"--stream reads one source; got video arguments too: {' '.join(args.videos)}")
    if args.segment_fps <= 0 or args.read_timeout <= 0:
        raise ValueError(f"--segment-fps and --read-timeout must be > 0, got {args.segment_fps} and {args.read_timeout}")
    model, name = load_predict_model(args.model, checkpoint=args.checkpoint, num_segments=args.num_segments)
    if not is_causal(model):
        raise ValueError(f"{name} is not causal: --stream needs a model built with causal=True "
                         "(create_model(name, causal=True), trained or fine-tuned so)")
    spec = resolve_view_spec(model, views="1x1", input_size=args.input_size)
    device = default_device(args.device)
    model.to(device)
    predictor = LivePredictor(model, spec, class_names_of(model, args.labels), top_k=args.top_k,
                              window=args.stream_window, device=device)
    source = LiveSource(args.stream, timeout=args.read_timeout, input_format=args.input_format, fps=args.fps)
    segments = sample_segments(source.frames(), segment_fps=args.segment_fps, frames_per_segment=spec.frames_per_segment)
    # Ctrl-C asks the source to stop: raised inside PyAV's read callback it could be lost.
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: source.stop.set())
    _say(f"{name}: streaming {source.name}, {args.segment_fps:g} segments/s of {spec.frames_per_segment} frame(s) "
         f"at {spec.crop_size}px, label over the last {predictor.streamer.window} segments")
    try:
        for seconds, frames in segments:
            p = predictor.step(frames, seconds)
            if args.json:
                print(json.dumps(p.to_dict()), flush=True)
            else:
                print(f"{p.time:8.2f}s  {p.label}  {p.score:.3f}  ({p.latency_ms:.0f} ms)", flush=True)
    except KeyboardInterrupt:
        _say(f"stopped (Ctrl-C) after {source.frames_read} frames, {predictor.steps} steps")
        return 130
    except StreamTimeoutError as exc:
        _say(f"{exc}: stopped after {source.frames_read} frames, {predictor.steps} steps")
        return 1
    except VideoDecodeError as exc:
        _say(f"{exc} ({predictor.steps} steps)")
        return 1
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    if predictor.steps == 0:
        _say(f"{source.name} ended after {source.frames_read} frames, too few for one segment")
        return 1
    _say(f"{source.name} ended after {source.frames_read} frames, {predictor.steps} steps")
    return 0
