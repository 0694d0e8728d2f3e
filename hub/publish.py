"""Publish a zoo tag on the Hugging Face Hub: convert, verify, write the folder, and (with --push) upload.

    python -m hub.publish tdn_resnet50.sthv1_8f best.pth.tar --out exports/tdn_resnet50.sthv1_8f
    python -m hub.publish tdn_resnet50.sthv1_8f best.pth.tar --out exports/tdn_resnet50.sthv1_8f --push

The source is an official MCG-NJU/TDN or mit-han-lab/temporal-shift-module checkpoint, a tdnzoo
training checkpoint (``{'model': state_dict, ...}``) or tdnzoo safetensors. The tool loads it
strictly into the tag's architecture (converting official layouts), writes ``model.safetensors``,
``config.json`` and a model card (``hub/templates/zoo_model_card.md``), loads the folder back through
``create_model('local-dir:...', pretrained=True)`` and requires identical weights and identical
outputs. Without ``--push`` it stops there; with ``--push`` and a token (``--token`` or ``HF_TOKEN``)
it runs ``create_repo(exist_ok=True)`` + ``upload_folder``. It prints the sha256 to record in
``tdnzoo/models/pretrained.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tdnzoo
from tdnzoo.errors import TdnzooError
from tdnzoo.hub import push_to_hub, save_pretrained, write_model_card
from tdnzoo.models.checkpoint import sha256_of
from tdnzoo.models.hub_loading import read_export_config
from tdnzoo.models.pretrained import PRETRAINED_CFGS

__all__ = ["VerificationError", "export_release", "main", "verify_export"]

TEMPLATE = Path(__file__).resolve().parent / "templates" / "zoo_model_card.md"


class VerificationError(TdnzooError):
    """The export does not reproduce the source model."""


def _clip(model: nn.Module, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, model.num_frames, 3, size, size, generator=generator)


def verify_export(source: nn.Module, folder: str | os.PathLike, *, size: int = 224) -> dict[str, Any]:
    """Load ``folder`` back and compare it with ``source``: every tensor and the outputs on a
    seeded random clip (batch 2) must be identical. Returns what was compared.

    Raises:
        VerificationError: a tensor or an output differs.
    """
    reloaded = tdnzoo.create_model(f"local-dir:{folder}", pretrained=True)
    own, back = source.state_dict(), reloaded.state_dict()
    if own.keys() != back.keys():
        raise VerificationError(f"the export's keys differ from the source's: {sorted(set(own) ^ set(back))[:8]}")
    differing = [k for k in own if not torch.equal(own[k], back[k])]
    if differing:
        raise VerificationError(f"{len(differing)} tensors differ after the round trip, e.g. {differing[:4]}")
    source.eval()
    reloaded.eval()
    clip = _clip(source, size)
    with torch.no_grad():
        expected, got = source(clip), reloaded(clip)
    max_diff = float((expected - got).abs().max())
    if not torch.equal(expected, got):
        raise VerificationError(f"outputs differ after the round trip (max abs difference {max_diff:.3g})")
    return {"tensors": len(own), "clip": tuple(clip.shape), "max_abs_diff": max_diff}


def export_release(
    tag: str,
    source_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    repo_id: str | None = None,
    verify_size: int = 224,
    results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert ``source_path`` into the tag's model, write the Hub folder ``out`` and verify it.

    Args:
        tag: a zoo tag (``arch.tag``) of ``tdnzoo.models.pretrained.PRETRAINED_CFGS``.
        source_path: official checkpoint, tdnzoo training checkpoint or safetensors.
        out: the folder to write.
        repo_id: the Hub repository (default: the tag's ``hf_hub_id``).
        verify_size: frame size of the verification clip.
        results: replaces the reported ``top1``/``top5``/``metrics_source``/``metrics_source_url``
            (for weights you trained yourself; the tag's numbers are the official release's).

    Returns:
        ``{'folder', 'repo_id', 'sha256', 'verification'}``.
    """
    if tag not in PRETRAINED_CFGS:
        raise TdnzooError(f"unknown zoo tag '{tag}'; `tdnzoo list --pretrained` lists them")
    cfg = PRETRAINED_CFGS[tag]
    repo_id = repo_id or cfg["hf_hub_id"]
    source = tdnzoo.create_model(tag, num_classes=cfg["num_classes"], num_segments=cfg["num_segments"],
                                 checkpoint_path=source_path)
    if results:
        source.pretrained_cfg.update({k: v for k, v in results.items() if v is not None})
    folder = save_pretrained(source, out, repo_id=repo_id, model_card=False)
    verification = verify_export(source, folder, size=verify_size)
    sha256 = sha256_of(Path(folder) / "model.safetensors")
    config, _ = read_export_config(f"local-dir:{folder}")
    conversion = (
        f"Converted with tdnzoo {tdnzoo.__version__} from `{Path(source_path).name}` "
        f"({'the official release, ' + cfg['weights_url'] if cfg.get('weights_url') else 'a checkpoint'}) by "
        f"`python -m hub.publish {tag} {Path(source_path).name} --out OUT`, which loads the source strictly, "
        f"writes this folder, loads it back and checks that all {verification['tensors']} tensors and the outputs on "
        f"a random clip {list(verification['clip'])} are identical (max abs difference "
        f"{verification['max_abs_diff']:g})."
    )
    write_model_card(config, folder, template_path=TEMPLATE, repo_id=repo_id, conversion=conversion)
    return {"folder": Path(folder), "repo_id": repo_id, "sha256": sha256, "verification": verification}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("tag", help="zoo tag, e.g. tdn_resnet50.sthv1_8f")
    parser.add_argument("source", help="official checkpoint, tdnzoo training checkpoint or safetensors")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--repo-id", help="Hub repository (default: the tag's hf_hub_id)")
    parser.add_argument("--verify-size", type=int, default=224, help="frame size of the verification clip")
    parser.add_argument("--top1", type=float, help="your own top-1 (for weights you trained)")
    parser.add_argument("--top5", type=float, help="your own top-5")
    parser.add_argument("--results-source", help="where --top1/--top5 come from (text)")
    parser.add_argument("--results-url", help="where --top1/--top5 come from (URL)")
    parser.add_argument("--push", action="store_true", help="upload the folder (needs a token)")
    parser.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN or the stored login)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to upload to (default: main)")
    args = parser.parse_args(argv)

    results = None
    if args.top1 is not None or args.top5 is not None:
        if not args.results_source:
            parser.error("--top1/--top5 need --results-source (say where the numbers come from)")
        results = {"top1": args.top1, "top5": args.top5, "metrics_source": args.results_source,
                   "metrics_source_url": args.results_url}
    try:
        done = export_release(args.tag, args.source, args.out, repo_id=args.repo_id,
                              verify_size=args.verify_size, results=results)
    except TdnzooError as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 2
    v = done["verification"]
    print(f"wrote {done['folder']} for {done['repo_id']}: verified ({v['tensors']} tensors and the outputs on "
          f"{list(v['clip'])} identical)")
    print(f"sha256 of model.safetensors: {done['sha256']}")
    if not args.push:
        print("not uploaded (no --push). After uploading, set "
              f"PRETRAINED_CFGS['{args.tag}']['sha256'] = '{done['sha256']}' in tdnzoo/models/pretrained.py")
        return 0
    from huggingface_hub import get_token

    token = args.token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        print("publish: error: --push needs a token: --token, HF_TOKEN or `hf auth login`", file=sys.stderr)
        return 2
    commit = push_to_hub(done["folder"], done["repo_id"], token=token, private=args.private or None,
                         revision=args.revision, commit_message=f"Publish {args.tag} (tdnzoo {tdnzoo.__version__})")
    print(f"uploaded to https://huggingface.co/{done['repo_id']}: {getattr(commit, 'commit_url', commit)}")
    print(f"now set PRETRAINED_CFGS['{args.tag}']['sha256'] = '{done['sha256']}' in tdnzoo/models/pretrained.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
