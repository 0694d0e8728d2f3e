"""``tdnzoo zoo-table`` (the README's model zoo table) and ``tdnzoo save-pretrained`` (a Hub-ready folder)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._args import positive_int


def _repo_id(text: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise argparse.ArgumentTypeError(f"not a Hub repository id (ORG/NAME): {text!r}") from exc
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "zoo-table",
        help="print the model zoo table, or rewrite it in a README",
        description="Generate the markdown model zoo table from the pretrained configs. With --write, replace "
        "the README section between <!-- zoo-table:start --> and <!-- zoo-table:end -->; with --check, exit 1 "
        "when that section is stale.",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="rewrite the zoo section of this file")
    group.add_argument("--check", metavar="README", help="exit 1 if the zoo section of this file is stale")
    p.set_defaults(func=run_zoo_table)

    p = sub.add_parser(
        "save-pretrained",
        help="write a model as a Hub-ready folder (weights, config.json, model card)",
        description="Build a model (a name or NAME.TAG, with optional weights) and write model.safetensors, "
        "config.json and README.md with tdnzoo.save_pretrained. The folder loads back with "
        "create_model('local-dir:DIR', pretrained=True) and can be uploaded with huggingface_hub.",
    )
    p.add_argument("model", help="e.g. tdn_resnet50.sthv1_8f or tdn_resnet18")
    p.add_argument("directory", help="folder to write")
    p.add_argument("--checkpoint-path", help="weights to load first (official release, tdnzoo checkpoint, safetensors)")
    p.add_argument("--pretrained", action="store_true", help="load the tag's pretrained weights first")
    p.add_argument("--num-segments", type=positive_int, default=None, help="segments (default: the checkpoint's or the tag's)")
    p.add_argument("--num-classes", type=positive_int, default=None, help="classes (default: the checkpoint's or the tag's)")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="frame side recorded for the weights (default: the size they were trained at)")
    p.add_argument("--repo-id", type=_repo_id, help="Hub repository the folder is meant for (shown in the card)")
    p.set_defaults(func=run_export)


def run_zoo_table(args: argparse.Namespace) -> int:
    from ..models.zoo_table import replace_zoo_section, zoo_table

    path = args.write or args.check
    if not path:
        print(zoo_table())
        return 0
    text = Path(path).read_text(encoding="utf-8")
    try:
        new = replace_zoo_section(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc  # which file lacks the markers
    if args.check:
        if new != text:
            print(f"{path}: the model zoo table is stale; run `python -m tdnzoo zoo-table --write {path}`",
                  file=sys.stderr)
            return 1
        print(f"{path}: the model zoo table is up to date")
        return 0
    if new != text:
        Path(path).write_text(new, encoding="utf-8")
        print(f"{path}: model zoo table rewritten")
    else:
        print(f"{path}: model zoo table already up to date")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..eval.model import load_described_model
    from ..hub import save_pretrained

    model, notes = load_described_model(
        args.model, checkpoint=args.checkpoint_path, pretrained=args.pretrained, require_weights=False,
        num_segments=args.num_segments, num_classes=args.num_classes, input_size=args.input_size,
    )
    for note in notes:
        print(f"tdnzoo save-pretrained: {note}", file=sys.stderr)
    folder = save_pretrained(model, args.directory, repo_id=args.repo_id)
    cfg = model.pretrained_cfg
    names = cfg.get("label_names")
    shown = f": {', '.join(names)}" if names else ""
    print(f"wrote {folder}: model.safetensors, config.json, README.md ({model.num_classes} classes{shown}; "
          f"{model.num_segments} segments, {tuple(cfg.get('input_size', (3, 224, 224)))[-1]} px); "
          f"load it with tdnzoo.create_model('local-dir:{folder}', pretrained=True)")
    return 0
