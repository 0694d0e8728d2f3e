"""``tdnzoo synth``: write the procedural temporal-reasoning dataset (folder-per-class mp4 files)."""
from __future__ import annotations

import argparse
import sys
import time

from ._args import nonnegative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from ..data import synthetic as syn

    p = sub.add_parser(
        "synth",
        help="generate the synthetic temporal-reasoning video dataset",
        description="Write OUTPUT/<split>/<class>/<index>.mp4 and OUTPUT/manifest.json: clips whose classes come in "
        "time-reversed pairs (left/right, up/down, approach/recede, clockwise/counter-clockwise, appear/disappear), "
        "moving vs still, and appearance-only controls. Deterministic from --seed.",
    )
    p.add_argument("--output", "-o", help="folder to write (new or empty; a finished one with the same settings is "
                   "reused)")
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="classes, space- or comma-separated (default: all; see --list-classes)")
    p.add_argument("--videos-per-class", type=positive_int, default=syn.DEFAULT_VIDEOS_PER_CLASS, metavar="N",
                   help=f"videos per class over all splits (default {syn.DEFAULT_VIDEOS_PER_CLASS})")
    p.add_argument("--frames", type=positive_int, default=syn.DEFAULT_FRAMES, metavar="N",
                   help=f"frames per video (default {syn.DEFAULT_FRAMES})")
    p.add_argument("--size", type=positive_int, default=syn.DEFAULT_SIZE, metavar="S",
                   help=f"frame side in pixels, even (default {syn.DEFAULT_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--difficulty", default=syn.DEFAULT_DIFFICULTY, choices=tuple(syn.STYLES),
                   help=f"actor size, clutter, texture and noise (default {syn.DEFAULT_DIFFICULTY})")
    default_splits = ",".join(f"{k}={v:g}" for k, v in syn.DEFAULT_SPLITS.items())
    p.add_argument("--splits", default=default_splits, help=f"NAME=FRACTION,... (default {default_splits})")
    p.add_argument("--workers", type=nonnegative_int, default=None, metavar="W", help="processes (default: one per CPU, up to 8)")
    p.add_argument("--codec", default="auto", choices=("auto", "libx264", "mpeg4"),
                   help="video codec (default: libx264 when PyAV has it, else mpeg4)")
    p.add_argument("--crf", type=nonnegative_int, default=syn.DEFAULT_CRF, help=f"x264 quality, lower is better "
                   f"(default {syn.DEFAULT_CRF})")
    p.add_argument("--fps", type=positive_int, default=syn.DEFAULT_FPS, help=f"frame rate stored in the files "
                   f"(default {syn.DEFAULT_FPS})")
    p.add_argument("--list-classes", action="store_true", help="print the classes and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import synthetic as syn

    if args.list_classes:
        width = max(map(len, syn.ALL_CLASSES))
        for name, c in syn.CLASSES.items():
            print(f"{name:<{width}}  {c.kind:<13}  reversed: {c.reverse_of:<{width}}  {c.description}")
        return 0
    if not args.output:
        raise ValueError("--output is required (or use --list-classes)")
    classes = None
    if args.classes:
        classes = [c for item in args.classes for c in item.split(",") if c]
    started = time.perf_counter()
    manifest = syn.generate_dataset(
        args.output, classes=classes, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size,
        seed=args.seed, difficulty=args.difficulty, splits=args.splits, fps=args.fps, codec=args.codec,
        crf=args.crf, workers=args.workers, progress=sys.stderr.isatty())
    per_split = ", ".join(f"{split} {sum(c.values())}" for split, c in manifest["counts"].items())
    s = manifest["settings"]
    print(f"{args.output}: {manifest['num_videos']} videos ({per_split}) of {len(manifest['classes'])} classes, "
          f"{s['frames']} frames of {s['size']}x{s['size']}, {s['codec']}, in {time.perf_counter() - started:.1f} s")
    return 0
