"""``tdnzoo bench stream``: the options of the streaming benchmark (:mod:`tdnzoo.bench.stream`)."""
from __future__ import annotations

import argparse

from ..bench.stream import StreamConfig
from ._args import nonnegative_int, positive_int, writable_folder


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    d = StreamConfig()
    parser.add_argument("--models", type=_csv, default=d.models,
                        help=f"comma list of model names, built causal (default {','.join(d.models)})")
    parser.add_argument("--num-segments", type=positive_int, default=d.num_segments, help=f"clip segments T (default {d.num_segments})")
    parser.add_argument("--size", type=positive_int, default=d.size, help=f"frame size (default {d.size})")
    parser.add_argument("--batch", type=positive_int, default=d.batch, help=f"streams stepped together (default {d.batch})")
    parser.add_argument("--rounds", type=positive_int, default=d.rounds, help=f"timed rounds (default {d.rounds})")
    parser.add_argument("--warmup", type=nonnegative_int, default=d.warmup)
    parser.add_argument("--no-compile", action="store_true", help="eager only (compiling ResNet-50 takes minutes)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--output", default="reports/stream", help="report folder (default: reports/stream)")
    parser.add_argument("--glibc-malloc-defaults", action="store_true", help="keep glibc's dynamic malloc thresholds")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench.stream import markdown_table, run_stream_benchmark, write_stream_report

    if args.threads:
        torch.set_num_threads(args.threads)
    config = StreamConfig(models=args.models, num_segments=args.num_segments, size=args.size, batch=args.batch,
                          rounds=args.rounds, warmup=args.warmup, compile=not args.no_compile,
                          fixed_malloc=not args.glibc_malloc_defaults)
    from ..models import parse_model_name

    for name in config.models:
        parse_model_name(name)  # an unknown name is one line now, not after the other models' timings
    writable_folder(args.output)
    result = run_stream_benchmark(config, progress=not args.no_progress)
    paths = write_stream_report(result, args.output)
    print(markdown_table(result))
    print(f"\nwrote {paths['markdown']}, {paths['json']}")
    return 0
