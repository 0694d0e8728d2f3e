"""Measure GFLOPs per view and parameters of pretrained tags, as recorded in ``tdnzoo.models.pretrained``.

GFLOPs: fvcore, one multiply-add = one flop, element-wise ops uncounted, one view = one clip
(all segments, ``frames_per_segment`` frames each) at one 224x224 crop, batch 1.

    python -m hub.measure                      # every tag (slow: a few minutes on 2 cores)
    python -m hub.measure 'tdn_resnet50.*'     # some tags
"""
from __future__ import annotations

import argparse
import logging

import torch
from torch import nn

import tdnzoo
from tdnzoo.models.pretrained import PRETRAINED_CFGS
from tdnzoo.models.registry import list_pretrained

__all__ = ["count_flops", "count_params", "main", "measure_tag"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: int = 224) -> int:
    """Flops of one view ``[1, num_frames, 3, size, size]`` as ``tdnzoo.count_flops`` counts them (fvcore's
    convention, the temporal conv counted as the official depthwise Conv1d)."""
    return round(tdnzoo.count_flops(model, input_size=size) * 1e9)


def measure_tag(name: str, *, num_segments: int | None = None) -> tuple[int, int]:
    """``(flops, params)`` of a tag's model at its segments (or ``num_segments``), 224x224."""
    cfg = PRETRAINED_CFGS[name]
    model = tdnzoo.create_model(cfg["architecture"], num_classes=cfg["num_classes"],
                                num_segments=num_segments or cfg["num_segments"])
    return count_flops(model, cfg["input_size"][-1]), count_params(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("filter", nargs="*", default=[""], help="fnmatch patterns of tags (default: all)")
    args = parser.parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{'tag':<28} {'GFLOPs':>8} {'params':>12}   recorded")
    for name in list_pretrained(args.filter):
        flops, params = measure_tag(name)
        cfg = PRETRAINED_CFGS[name]
        same = round(flops / 1e9, 2) == cfg["gflops"] and params == cfg["params"]
        print(f"{name:<28} {flops / 1e9:>8.2f} {params:>12,}   {'same' if same else 'DIFFERENT'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
