"""``tdnzoo export``: deployment formats, one subcommand each (``export onnx``)."""
from __future__ import annotations

import argparse
import json
import sys

from ._args import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("export", help="export a model for deployment (ONNX)",
                           description="Export a model for deployment.")
    formats = group.add_subparsers(dest="format", required=True, metavar="FORMAT")

    p = formats.add_parser(
        "onnx",
        help="export to ONNX, checked against PyTorch with onnxruntime",
        description="Export a TSN/TSM/TDN model to ONNX. The graph takes video [B, T, 3, H, W] (T = segments x "
        "frames per segment, segment-major, normalised RGB) and returns logits; layout, mean/std, segments and "
        "labels are recorded in the file's metadata. The file is written only if onnxruntime reproduces "
        "PyTorch's logits (within --rtol of the largest) on random clips, unless --no-verify.",
    )
    p.add_argument("name", metavar="NAME[.TAG]", help="model, e.g. tsm_resnet50 or tdn_resnet50.sthv1_8f "
                   "(a tag loads its pretrained weights)")
    p.add_argument("out", metavar="OUT.onnx", help="file to write")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="weights to load (tdnzoo or official)")
    p.add_argument("--pretrained", action="store_true", help="load the default pretrained weights of NAME")
    p.add_argument("--num-segments", type=positive_int, default=None, metavar="N", help="segments (default: the checkpoint's or the tag's, else 8)")
    p.add_argument("--num-classes", type=positive_int, default=None, metavar="K",
                   help="classes (default: the tag's or checkpoint's, else 400)")
    p.add_argument("--size", type=positive_int, default=None, metavar="S", help="frame height and width (default: the size the weights were trained at, else 224)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="B", help="fixed batch size without --dynamic-batch")
    p.add_argument("--opset", type=positive_int, default=None, metavar="N", help="ONNX opset (default 18)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (default: torchscript)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the onnxruntime check (and write whatever the exporter produced)")
    p.add_argument("--rtol", type=positive_float, default=1e-4, help="allowed max |onnx - torch| / largest logit (1e-4)")
    p.set_defaults(func=run_onnx)


def run_onnx(args: argparse.Namespace) -> int:
    from ..eval.model import load_described_model
    from ..export.onnx import DEFAULT_OPSET, export_onnx

    pretrained = args.checkpoint is None and (args.pretrained or "." in args.name
                                               or args.name.startswith(("hf-hub:", "local-dir:")))
    model, notes = load_described_model(
        args.name, checkpoint=args.checkpoint, pretrained=pretrained, require_weights=False,
        num_segments=args.num_segments, num_classes=args.num_classes, input_size=args.size, flags={"input_size": "--size"},
    )
    for note in notes:
        print(f"tdnzoo export: {note}", file=sys.stderr)
    if not pretrained and args.checkpoint is None:
        print(f"tdnzoo export: note: no --checkpoint or pretrained tag, exporting randomly initialised "
              f"{args.name}", file=sys.stderr)
    result = export_onnx(
        model, args.out, batch_size=args.batch_size, dynamic_batch=args.dynamic_batch,
        opset=args.opset or DEFAULT_OPSET, exporter=args.exporter, verify=args.verify, rtol=args.rtol,
        model_name=args.name,
    )
    meta = result.metadata
    print(f"wrote {result.path}: {meta['model_name']}, input '{meta['input_name']}' {meta['input_shape']} "
          f"float32 (segment-major, RGB, mean {meta['mean']}, std {meta['std']}), "
          f"output '{meta['output_name']}' [{'batch' if args.dynamic_batch else args.batch_size}, {model.num_classes}]")
    names = meta.get("label_names")
    if names:
        print(f"label names in its metadata: {', '.join(json.loads(names))}")
    if result.max_error is None:
        print("not verified (--no-verify)")
    else:
        sizes = ", ".join(str(b) for b in result.verified_batch_sizes)
        print(f"verified with onnxruntime at batch {sizes}: max |onnx - torch| = {result.max_error:.2g} x largest "
              f"logit (tolerance {args.rtol:g})")
    return 0
