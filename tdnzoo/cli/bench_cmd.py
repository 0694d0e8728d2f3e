"""``tdnzoo flops`` and ``tdnzoo bench`` (speed report; ``bench breakdown``, ``bench accuracy``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.video import METHODS
from . import bench_accuracy, bench_loader, bench_stream
from ._args import device_arg, nonnegative_int, positive_int, writable_folder


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _int_csv(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _add_speed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="reports/bench", help="report folder (default: reports/bench)")
    p.add_argument("--methods", type=_csv, default=METHODS, help="comma list (default tsn,tsm,tdn)")
    p.add_argument("--backbones", type=_csv, default=("resnet50",), help="comma list of timm backbones (default resnet50)")
    p.add_argument("--models", type=_csv, default=(), help="explicit model names; overrides --methods/--backbones")
    p.add_argument("--num-segments", type=positive_int, default=8)
    p.add_argument("--size", type=positive_int, default=160, help="frame size (default 160, reduced from 224 to finish fast)")
    p.add_argument("--batch", type=positive_int, default=1, help="latency batch (default 1)")
    p.add_argument("--throughput-batch", type=_int_csv, default=(4,), metavar="N[,N...]",
                   help="batch sizes of the throughput timing, comma list (default 4)")
    p.add_argument("--rounds", type=positive_int, default=16, help="timed rounds per model (interleaved)")
    p.add_argument("--train-rounds", type=positive_int, default=8)
    p.add_argument("--warmup", type=nonnegative_int, default=2)
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", nargs="?", const="all", default="latency", choices=("none", "latency", "all"),
                   help="what is also timed through torch.compile (inference on the fuse_for_inference copy): "
                   "latency (default: compiled once per model), all (--compile alone: also throughput and the "
                   "training step) or none")
    p.add_argument("--no-compile", dest="compile", action="store_const", const="none", help="eager timings only")
    p.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    p.add_argument("--no-throughput", action="store_true", help="skip the batched throughput timing")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    _add_malloc_argument(p)
    p.add_argument("--official-tdn", default=None, metavar="PATH",
                   help="a checkout of MCG-NJU/TDN: also time its TDN-R50 with the same weights")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_bench)


def _add_malloc_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--glibc-malloc-defaults", action="store_true",
                   help="keep glibc's dynamic malloc thresholds (by default the run fixes them, so that page "
                   "faults from freed and re-allocated feature maps do not decide the timings)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="GFLOPs per view with a per-module breakdown (fvcore)")
    p.add_argument("name", help="model name, e.g. tdn_resnet50")
    p.add_argument("--num-segments", type=positive_int, default=None)
    p.add_argument("--size", type=positive_int, default=224)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_flops)

    bench = sub.add_parser(
        "bench", help="speed report (default) or 'bench accuracy'",
        description="Speed report: params, GFLOPs, latency, throughput, training step and memory of TSN/TSM/TDN, "
        "timed interleaved in one process; writes report.md, results.json and speed.png. "
        "'tdnzoo bench breakdown' times TDN's parts; 'tdnzoo bench accuracy --help' for the accuracy benchmark.",
    )
    _add_speed_arguments(bench)
    modes = bench.add_subparsers(dest="bench_command", metavar="{speed,breakdown,accuracy,stream}")
    _add_speed_arguments(modes.add_parser("speed", help="the speed report (the default)"))
    breakdown = modes.add_parser("breakdown", help="where TDN's extra time goes: its parts timed next to TSN")
    breakdown.add_argument("--backbone", default="resnet50")
    breakdown.add_argument("--num-segments", type=positive_int, default=8)
    breakdown.add_argument("--size", type=positive_int, default=224)
    breakdown.add_argument("--rounds", type=positive_int, default=8)
    breakdown.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    _add_malloc_argument(breakdown)
    breakdown.set_defaults(func=run_breakdown)
    accuracy = modes.add_parser("accuracy", help="train and compare TSN/TSM/TDN on a generated temporal dataset")
    bench_accuracy.add_arguments(accuracy)
    bench_stream.add_arguments(modes.add_parser("stream", help="live video: one streaming step against a clip forward"))
    bench_loader.register(modes)


def run_flops(args: argparse.Namespace) -> int:
    import json

    from ..bench.flops import flop_breakdown

    result = flop_breakdown(args.name, num_segments=args.num_segments, input_size=args.size)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0


def run_breakdown(args: argparse.Namespace) -> int:
    import torch

    from ..bench.breakdown import time_breakdown

    if args.threads:
        torch.set_num_threads(args.threads)
    result = time_breakdown(args.backbone, num_segments=args.num_segments, size=args.size, rounds=args.rounds,
                            fixed_malloc=not args.glibc_malloc_defaults)
    print(result.table())
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..bench import SpeedConfig, run_speed_benchmark, write_speed_report
    from ..bench.speed import markdown_table

    if args.threads:
        torch.set_num_threads(args.threads)
    config = SpeedConfig(
        methods=args.methods, backbones=args.backbones, models=args.models, num_segments=args.num_segments,
        size=args.size, batch=args.batch, throughput_batches=args.throughput_batch, rounds=args.rounds,
        train_rounds=args.train_rounds, warmup=args.warmup, device=args.device, dtype=args.dtype,
        channels_last=args.channels_last, compile=args.compile, train=not args.no_train,
        throughput=not args.no_throughput, official_tdn=args.official_tdn,
        fixed_malloc=not args.glibc_malloc_defaults,
    )
    if args.official_tdn and not Path(args.official_tdn).is_dir():
        raise ValueError(f"--official-tdn {args.official_tdn}: no such folder (a checkout of MCG-NJU/TDN)")
    writable_folder(args.output)  # before minutes of timing, not after
    result = run_speed_benchmark(config, progress=not args.no_progress)
    paths = write_speed_report(result, args.output)
    print(markdown_table(result))
    print(f"\nwrote {paths['markdown']}, {paths['json']}, {paths['plot']}")
    if result.warnings:  # also on stderr, where a script piping the report away still shows it
        print(f"tdnzoo bench: warning: {result.warnings[0]}: " + "; ".join(result.warnings[1:]), file=sys.stderr)
    return 0
