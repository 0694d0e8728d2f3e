"""``tdnzoo convert``: official TDN / TSM checkpoint -> tdnzoo safetensors."""
from __future__ import annotations

import argparse

from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an official TDN/TSM checkpoint to tdnzoo safetensors",
        description="Convert an official MCG-NJU/TDN or mit-han-lab/temporal-shift-module checkpoint "
        "(or any checkpoint create_model can load) into a tdnzoo safetensors file.",
    )
    p.add_argument("src", help="checkpoint to read (e.g. best.pth.tar)")
    p.add_argument("dst", help="safetensors file to write")
    p.add_argument("--model", required=True, help="architecture, e.g. tdn_resnet50")
    p.add_argument("--num-segments", type=positive_int, default=None, help="segments the model was trained with (default 8)")
    p.add_argument("--num-classes", type=positive_int, default=None, help="classes (default: from the checkpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import create_model
    from ..models.checkpoint import save_weights

    model = create_model(args.model, num_classes=args.num_classes, num_segments=args.num_segments,
                         checkpoint_path=args.src)
    path = save_weights(model, args.dst, {"source": str(args.src)})
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {path}: {args.model}, {model.num_classes} classes, {model.num_segments} segments, {n:,} parameters")
    return 0
