"""``tdnzoo list`` and ``tdnzoo info``."""
from __future__ import annotations

import argparse
import json

from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list model names (or pretrained tags)")
    p.add_argument("filter", nargs="?", default="", help="fnmatch pattern, e.g. 'tdn_*'")
    p.add_argument("--pretrained", action="store_true", help="list arch.tag names with weights")
    p.set_defaults(func=run_list)

    p = sub.add_parser("info", help="describe a model or a pretrained tag")
    p.add_argument("name", help="e.g. tdn_resnet50 or tdn_resnet50.sthv1_8f")
    p.add_argument("--num-segments", type=positive_int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_info)


def run_list(args: argparse.Namespace) -> int:
    from ..models import list_models

    for name in list_models(args.filter, pretrained=args.pretrained):
        print(name)
    return 0


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    return str(value)


def run_info(args: argparse.Namespace) -> int:
    from ..models import create_model
    from ..models.pretrained import weights_status

    model = create_model(args.name, num_segments=args.num_segments)  # metadata only: no weights needed
    info = dict(model.pretrained_cfg)
    info["params"] = sum(p.numel() for p in model.parameters())
    info["num_frames"] = model.num_frames
    info["num_features"] = model.num_features
    labels = info.pop("label_names", None)
    if labels:
        info["label_names"] = f"{len(labels)} names: {labels[0]!r}, {labels[1]!r}, ... (model.pretrained_cfg['label_names'])"
    if info.get("tag"):
        info["weights"] = weights_status(info)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {_show(value)}")
    return 0
