"""``tdnzoo bench loader``: decoded clips/s of tdnzoo's reader next to decord and torchcodec
(:mod:`tdnzoo.bench.loader`)."""
from __future__ import annotations

import argparse
import shlex
import sys

from ._args import positive_int, writable_folder


def register(modes: argparse._SubParsersAction) -> None:
    """Add ``loader`` to the modes of ``tdnzoo bench``."""
    p = modes.add_parser(
        "loader", help="decoded clips/s: tdnzoo's reader, decord and torchcodec on generated videos",
        description="Generates H.264 (256p, 720p; a keyframe every 250 frames), VP9 WebM (240p) and a JPEG frame "
        "folder, then times whole clips (TSN 8x1 and TDN 8x5 sampling, one decoder thread and all cores) with "
        "every installed backend, interleaved; writes loader.md and loader.json.",
    )
    p.add_argument("--output", default="reports/loader", help="report folder (default: reports/loader)")
    p.add_argument("--data-dir", default=None, help="generated inputs, kept for reruns (default: OUTPUT/data)")
    p.add_argument("--files", default=None, help="comma list of h264_256p,h264_720p,vp9_240p,jpeg_100p (default: all)")
    p.add_argument("--clips", type=positive_int, default=4, help="clips per round and backend (default 4)")
    p.add_argument("--rounds", type=positive_int, default=5, help="timed rounds (default 5; each clip's fastest read counts)")
    p.add_argument("--threads", default="1,0", help="decoder threads to time, comma list; 0 = all cores (default 1,0)")
    p.set_defaults(func=run)
    if modes.metavar:  # list it in `tdnzoo bench --help`
        modes.metavar = modes.metavar.rstrip("}") + ",loader}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench.loader import LOADER_FILES, available_backends, run_loader_benchmark, write_loader_report

    files = LOADER_FILES
    if args.files:
        wanted = [name.strip() for name in args.files.split(",") if name.strip()]
        known = {f.name: f for f in LOADER_FILES}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(f"unknown --files {', '.join(unknown)}; known: {', '.join(known)}")
        files = tuple(known[name] for name in wanted)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--threads takes comma-separated counts (0: all cores), got {args.threads!r}") from None
    if not threads or min(threads) < 0 or args.clips < 1 or args.rounds < 1:
        raise ValueError(f"--clips and --rounds must be >= 1 and --threads >= 0, got {args.clips}, {args.rounds} "
                         f"and {args.threads!r}")
    writable_folder(args.output)  # before generating and timing, not after
    if args.data_dir:
        writable_folder(args.data_dir, "--data-dir")
    output = Path(args.output)
    print(f"backends: {', '.join(available_backends())}", flush=True)
    results = run_loader_benchmark(args.data_dir or output / "data", files=files, threads=threads, clips=args.clips,
                                   rounds=args.rounds, log=lambda line: print(line, flush=True))
    command = "tdnzoo bench loader " + shlex.join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "loader"] else ""
    path = write_loader_report(results, output, command=command.strip() or "tdnzoo bench loader")
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path} and {output / 'loader.json'}")
    return 0
