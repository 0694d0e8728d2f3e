"""``tdnzoo predict``: top classes of video files, or scores along long videos (sliding windows).

Exit status: 0 when at least one video got a result, 1 when every video failed to decode,
2 for a usage error (bad model, checkpoint, labels, window), reported by :func:`tdnzoo.cli.main`.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from . import predict_live
from ._args import device_arg, float_at_least, nonnegative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes of video files, or per-window scores along long videos",
        description="Decode videos with PyAV, sample and transform them as the model's pretrained config says "
        "(segments, frames per segment, input size, mean/std, test views) and print the top-k classes, softmax "
        "averaged over the views. Unreadable videos are reported on stderr and skipped; the exit status is 1 only "
        "when every video failed. With --sliding (or --window), score windows along each video and write "
        "<video>.windows.csv, <video>.windows.json and <video>.timeline.png into --output.",
    )
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (or frame folders)")
    p.add_argument("--model", default=None,
                   help="NAME[.TAG], or an export with its weights: local-dir:PATH or hf-hub:ORG/NAME[@REV]; "
                   "optional with a tdnzoo training checkpoint")
    p.add_argument("--checkpoint", default=None, help="weights: training checkpoint, safetensors or official release")
    p.add_argument("--num-segments", type=positive_int, default=None, help="segments per clip (default: the model's)")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes to show per video or window (default 5)")
    p.add_argument("--views", default=None,
                   help="CLIPSxCROPS, e.g. 1x1, 10x3 (default: the tag's test protocol, else 1x1; 1x1 per window)")
    p.add_argument("--input-size", type=positive_int, default=None, help="crop side (default: the model's)")
    p.add_argument("--no-full-res", dest="full_res", action="store_false", default=None,
                   help="3-crop views at the input size instead of the full resized side")
    p.add_argument("--labels", default=None,
                   help="class names: a file with one per line, or kinetics400 / sthv1 / sthv2 "
                   "(default: the model's label names, else class_<i>)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="views (clips x crops) per forward pass (default 8)")
    p.add_argument("--workers", type=nonnegative_int, default=2, help="decoding processes for whole videos (default 2)")
    p.add_argument("--loader-timeout", type=float_at_least(0.0), default=600.0, metavar="SECONDS",
                   help="wait this long for a video from the workers, then stop with an error naming it "
                   "(default 600; 0 waits forever)")
    p.add_argument("--device", type=device_arg, default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout instead of tables")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    g = p.add_argument_group("long videos (sliding windows)")
    g.add_argument("--sliding", action="store_true", help="score windows along each video (default window 2s)")
    g.add_argument("--window", default=None,
                   help="window span in frames (64) or seconds (2s, 1.5s); implies --sliding (default 2s)")
    g.add_argument("--stride", "--window-stride", dest="stride", default=None,
                   help="step between windows, frames or seconds (default: half the window)")
    g.add_argument("--fps", type=positive_float, default=None, help="frame rate for spans in seconds (default: the file's)")
    g.add_argument("--output", default=".", help="folder for the CSV, JSON and PNG files (default: .)")
    g.add_argument("--timeline-classes", type=positive_int, default=5, help="classes drawn on the timeline (default 5)")
    predict_live.add_arguments(p)
    p.set_defaults(func=run)


def _error(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"tdnzoo predict: {message}", file=sys.stderr)  # above a running progress bar, not through it


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _error(f"warning: {message}")  # a file cut short: one line, not a source excerpt


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..data.errors import VideoDecodeError
    from ..prediction import (
        class_names_of,
        format_predictions,
        format_segments,
        load_predict_model,
        parse_span,
        resolve_view_spec,
        run_predictions,
        score_windows,
    )
    from ..prediction.loading import default_device

    if args.stream is not None:  # live video: its own module
        return predict_live.run_live(args)
    if not args.videos:
        raise ValueError("give video files, or a live source with --stream SOURCE")
    sliding = args.sliding or args.window is not None or args.stride is not None
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 0:
        raise ValueError(f"--top-k and --batch-size must be >= 1 and --workers >= 0, got {args.top_k}, "
                         f"{args.batch_size} and {args.workers}")
    if sliding:  # catch a malformed span now rather than once per video
        parse_span(args.window or "2s", 1.0, name="--window")
        if args.stride is not None:
            parse_span(args.stride, 1.0, name="--stride")
    notes: list[str] = []
    views = args.views if args.views is not None or not sliding else "1x1"
    model, name = load_predict_model(args.model, checkpoint=args.checkpoint, num_segments=args.num_segments,
                                     input_size=args.input_size, views=args.views, notes=notes)
    for note in notes:
        _error(note)
    spec = resolve_view_spec(model, views=views, input_size=args.input_size, full_res=args.full_res)
    names = class_names_of(model, args.labels)
    device = default_device(args.device)
    model.to(device)
    header = {"model": name, "num_segments": spec.num_segments, "frames_per_segment": spec.frames_per_segment,
              "views": spec.views, "input_size": spec.crop_size, "sampling": spec.sampling}

    if not sliding:
        results = run_predictions(args.videos, model, spec, names, top_k=args.top_k, batch_size=args.batch_size,
                                  workers=args.workers, device=device, progress=args.progress,
                                  worker_timeout_s=args.loader_timeout,
                                  on_error=lambda path, message: _error(f"skipped {path}: {message}"))
        failed = [r.video for r in results if not r.ok]
        if len(results) > 1 and failed:
            _error(f"could not read {len(failed)} of {len(results)} videos")
        if args.json:
            print(json.dumps({**header, "results": [r.to_dict() for r in results]}, indent=2))
        else:
            table = format_predictions(results)
            if table:
                print(f"{name}: {spec.views} views of {spec.num_frames} frames at {spec.crop_size}px\n")
                print(table)
        return 0 if any(r.ok for r in results) else 1

    entries, any_ok = [], False
    for video in args.videos:
        try:
            scores = score_windows(video, model, spec, names, window=args.window or "2s", stride=args.stride,
                                   fps=args.fps, batch_size=args.batch_size, device=device, progress=args.progress)
        except VideoDecodeError as exc:
            _error(f"skipped {video}: {exc}")
            entries.append({"video": video, "error": str(exc)})
            continue
        except ValueError as exc:  # a window in seconds for a video without frame rate, a bad span
            _error(f"skipped {video}: {exc}")
            entries.append({"video": video, "error": str(exc)})
            continue
        any_ok = True
        paths = scores.save(args.output, k=args.top_k, num_classes=args.timeline_classes, model=name)
        damage = {"declared_frames": scores.declared_frames, "truncated": True} if scores.truncated else {}
        entries.append({"video": video, "num_frames": scores.num_frames, "seconds": scores.seconds, **damage,
                        "num_windows": len(scores), "files": {k: str(v) for k, v in paths.items()},
                        "segments": scores.segments()})
        if not args.json:
            print(format_segments(scores))
            print(f"  wrote {paths['csv']}, {paths['json']}, {paths['png']}\n")
    if args.json:
        print(json.dumps({**header, "results": entries}, indent=2))
    return 0 if any_ok else 1
