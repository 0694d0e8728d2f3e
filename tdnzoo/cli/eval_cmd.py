"""``tdnzoo eval``: accuracy of a model with the official test protocols, and a report."""
from __future__ import annotations

import argparse
import sys

from ._args import device_arg, float_at_least, nonnegative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on videos (CLIPSxCROPS views) and write a report",
        description="Evaluate with the official protocols: --views 1x1 (centre crop), 1x3, or 10x3 (Kinetics); "
        "softmax scores are averaged over views. Writes report.json, report.md (published numbers beside "
        "the measured ones when the model has them) and confusion.png into --output. Works under torchrun.",
    )
    p.add_argument("--model", default=None,
                   help="NAME[.TAG], or an export with its weights: local-dir:PATH or hf-hub:ORG/NAME[@REV]; "
                   "optional with a tdnzoo training checkpoint")
    p.add_argument("--checkpoint", default=None, help="weights: training checkpoint, safetensors or official release")
    p.add_argument("--data-root", required=True, help="data folder")
    p.add_argument("--dataset", default="folder", choices=("folder", "sthv1", "sthv2", "kinetics"))
    p.add_argument("--split", default="val", help="sub-folder for the folder layout (default val)")
    p.add_argument("--list", dest="list_file", default=None, help="list file (list layouts)")
    p.add_argument("--val-list", dest="list_file", help=argparse.SUPPRESS)
    p.add_argument("--num-segments", type=positive_int, default=None, help="segments per clip (default: the model's)")
    p.add_argument("--input-size", type=positive_int, default=None, help="crop side (default: the size the weights were trained at, else 224)")
    p.add_argument("--views", default=None,
                   help="CLIPSxCROPS, e.g. 1x1, 1x3, 10x3 (default: the weights' test views, else 10x3 for kinetics, "
                   "else 1x1: the official protocols)")
    p.add_argument("--no-full-res", dest="full_res", action="store_false",
                   help="3-crop views at the input size instead of the full resized side")
    p.add_argument("--batch-size", type=positive_int, default=1, help="videos per batch (each brings CLIPS*CROPS views)")
    p.add_argument("--workers", type=nonnegative_int, default=2)
    p.add_argument("--loader-timeout", type=float_at_least(0.0), default=600.0, metavar="SECONDS",
                   help="wait this long for a batch from the workers, then stop with an error naming the stuck "
                   "video (default 600; 0 waits forever)")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--device", type=device_arg, default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    p.add_argument("--output", required=True, help="folder for report.json, report.md, confusion.png")
    p.add_argument("--save-scores", action="store_true",
                   help="also write scores.pt: per-video softmax scores, labels and paths (for fusing runs)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..data.datasets import DATASET_PRESETS
    from ..data.transforms import parse_views, resolve_eval_sizes
    from ..eval import build_eval_dataset, evaluate, load_described_model, write_report
    from ..train.distributed import setup_distributed

    info = setup_distributed(args.device)
    try:
        model, notes = load_described_model(args.model, checkpoint=args.checkpoint, num_segments=args.num_segments,
                                            input_size=args.input_size, views=args.views)
        if info.is_main:
            for note in notes:
                print(f"tdnzoo eval: {note}", file=sys.stderr)
        if args.views is None:  # the weights' test protocol, else the dataset's official one
            cfg = model.pretrained_cfg
            args.views = (f"{cfg['test_clips']}x{cfg.get('test_crops', 1)}" if cfg.get("test_clips")
                          else DATASET_PRESETS[args.dataset].default_views)
        dataset = build_eval_dataset(
            model, dataset=args.dataset, root=args.data_root, split=args.split, list_file=args.list_file,
            views=args.views, input_size=args.input_size, full_res=args.full_res,
        )
        result = evaluate(model, dataset, batch_size=args.batch_size, workers=args.workers, device=info.device,
                          worker_timeout_s=args.loader_timeout,
                          amp=args.amp, progress=args.progress)
        if info.is_main:
            crop, resize = resolve_eval_sizes(model, input_size=args.input_size)
            crops = parse_views(args.views)[1]
            name = args.model or model.pretrained_cfg.get("architecture", "model")
            details = {
                "checkpoint": args.checkpoint, "dataset": args.dataset, "data_root": str(args.data_root),
                "split": args.split if args.dataset == "folder" else args.list_file,
                "num_segments": model.num_segments, "frames_per_segment": model.frames_per_segment,
                "input_size": crop, "resize_size": resize, "full_res_3crop": args.full_res if crops == 3 else None,
                "processes": info.world_size,
            }
            details = {k: v for k, v in details.items() if v is not None}
            paths = write_report(result, args.output, model_name=name, pretrained_cfg=model.pretrained_cfg,
                                 details=details)
            print(f"{name}: top-1 {result.top1:.2f}  top-5 {result.top5:.2f}  mean class {result.mean_class_accuracy:.2f}"
                  f"  ({result.num_videos} videos, {args.views} views)")
            if args.save_scores:
                import torch

                torch.save({"probs": result.probs, "labels": result.labels, "views": args.views,
                            "videos": [r.path for r in dataset.records], "class_names": result.class_names or []},
                           paths["json"].with_name("scores.pt"))
            print(f"report: {paths['markdown']}")
    finally:
        if info.distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0
