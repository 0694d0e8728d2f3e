"""``tdnzoo bench accuracy``: the options of the accuracy benchmark (:mod:`tdnzoo.bench.accuracy`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.accuracy import DEFAULTS, PRESETS, REPORT
from ..models.methods import COMPOSITION_KEYWORDS
from ._args import device_arg, nonnegative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (``tdnzoo bench accuracy``)."""
    d = DEFAULTS
    parser.add_argument("--output", "-o", required=True, help="report folder (data and runs go inside; reruns resume)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                        help="synthetic classes, space- or comma-separated (default: the five time-reversed pairs and "
                        "two appearance classes; `tdnzoo synth --list-classes` lists them all)")
    parser.add_argument("--videos-per-class", type=positive_int, default=d["videos_per_class"], metavar="N",
                        help=f"videos per class, 3/4 train 1/4 val (default {d['videos_per_class']})")
    parser.add_argument("--frames", type=positive_int, default=d["frames"], metavar="N",
                        help=f"frames per video (default {d['frames']})")
    parser.add_argument("--video-size", type=positive_int, default=None, metavar="S",
                        help="video side in pixels (default: --size)")
    parser.add_argument("--num-segments", type=positive_int, default=d["num_segments"], metavar="N",
                        help=f"segments per clip (default {d['num_segments']})")
    parser.add_argument("--size", type=positive_int, default=d["size"], metavar="S",
                        help=f"input crop side (default {d['size']})")
    parser.add_argument("--backbone", default=d["backbone"], help=f"timm backbone (default {d['backbone']})")
    parser.add_argument("--epochs", type=positive_int, default=d["epochs"], help=f"training epochs (default {d['epochs']})")
    parser.add_argument("--batch-size", type=positive_int, default=d["batch_size"], help=f"default {d['batch_size']}")
    parser.add_argument("--lr", type=positive_float, default=d["lr"], help=f"AdamW learning rate (default {d['lr']:g})")
    parser.add_argument("--seed", type=int, default=d["seed"], help=f"default {d['seed']}")
    parser.add_argument("--difficulty", default=d["difficulty"], choices=("easy", "normal", "hard"),
                        help=f"synthetic clutter and noise (default {d['difficulty']})")
    parser.add_argument("--preset", default="default", choices=tuple(PRESETS),
                        help="what the report compares: 'default' (tsn, tsm, tdn, one seed) or 'ablation' (the TDN "
                        "paper's ablation: " + ",".join(PRESETS["ablation"]["methods"])
                        + f", {PRESETS['ablation']['seeds']} seeds); --methods and --seeds override it")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="methods, space- or comma-separated: tsn, tsm, tdn, or a composition PRESET+BLOCK[+BLOCK] / "
                        f"PRESET-BLOCK with BLOCK one of {', '.join(COMPOSITION_KEYWORDS)} (e.g. "
                        "tsn,tsn+stdm,tsn+ltdm,tdn,tsm; default: the preset's)")
    parser.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                        help="runs per method (seeds SEED, SEED+1, ...), reported as mean and spread (default: the "
                        "preset's, 1 for 'default')")
    parser.add_argument("--workers", type=nonnegative_int, default=d["workers"],
                        help=f"data-loading and generation processes (default {d['workers']})")
    parser.add_argument("--data-dir", default=None, help="where the dataset goes (default OUTPUT/data)")
    parser.add_argument("--device", type=device_arg, default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: OMP_NUM_THREADS or one per core; 1 is best on a busy machine)")
    parser.add_argument("--merge-eval", nargs="+", default=[], metavar="PATH",
                        help="`tdnzoo eval` reports (report.json or its folder) to add as real-dataset rows")
    parser.add_argument("--only-merge", action="store_true",
                        help="train nothing: rewrite the report from OUTPUT/results.json (if any) plus --merge-eval")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tdnzoo bench accuracy`` from parsed :func:`add_arguments` options; returns the exit code."""
    from ..bench.accuracy import format_summary, merge_reports, run_accuracy_benchmark

    if args.only_merge:
        merge_reports(args.output, args.merge_eval)
        print(f"report: {Path(args.output) / REPORT}")
        return 0
    classes = [c for item in args.classes for c in item.split(",") if c] if args.classes else None
    preset = PRESETS[args.preset]
    methods = [m for item in args.methods for m in item.split(",") if m] if args.methods else list(preset["methods"])
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    results = run_accuracy_benchmark(
        args.output, classes=classes, videos_per_class=args.videos_per_class, frames=args.frames,
        video_size=args.video_size, num_segments=args.num_segments, size=args.size, backbone=args.backbone,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, difficulty=args.difficulty,
        methods=methods, seeds=seeds, workers=args.workers, data_dir=args.data_dir, merge_eval=args.merge_eval,
        device=args.device, threads=args.threads, progress=args.progress,
    )
    print(format_summary(results))
    print(f"report: {Path(args.output) / REPORT}")
    return 0
