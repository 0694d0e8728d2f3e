"""Time the original MCG-NJU/TDN code beside tdnzoo, from a user's own checkout (optional).

Nothing of that code is part of tdnzoo: we import it from the path the user gives, build its
TDN-R50 (its constructor downloads ImageNet weights, which we answer with an empty dict, as its
own ``strict=False`` load then keeps the random init), convert its weights into tdnzoo's
``tdn_resnet50``, check both compute the same logits, and time them interleaved with a TSN-R50.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from .timing import paired_ratio, time_interleaved

__all__ = ["build_official_tdn", "compare_official_tdn"]


def build_official_tdn(path: str | Path, *, num_segments: int, num_classes: int) -> torch.nn.Module:
    """The official ``TSN(num_classes, num_segments, 'RGB', base_model='resnet50', dropout=0.5)``."""
    root = Path(path).expanduser().resolve()
    if not (root / "ops" / "models.py").is_file() or not (root / "ops" / "tdn_net.py").is_file():
        raise ValueError(f"--official-tdn {path}: expected a checkout of MCG-NJU/TDN with ops/models.py and ops/tdn_net.py")
    # Its package is named plainly `ops`: import it from the checkout alone, whatever `ops`
    # this process already holds, and put the process's own back afterwards.
    held = {name: sys.modules.pop(name) for name in list(sys.modules) if name == "ops" or name.startswith("ops.")}
    sys.path.insert(0, str(root))
    try:
        import torch.utils.model_zoo as model_zoo

        with mock.patch.object(model_zoo, "load_url", lambda *a, **k: {}):
            from ops.models import TSN  # type: ignore[import-not-found]

            return TSN(num_classes, num_segments, "RGB", base_model="resnet50", dropout=0.5, print_spec=False)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "ops" or n.startswith("ops.")]:
            del sys.modules[name]
        sys.modules.update(held)


def compare_official_tdn(config: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A report row for the official TDN-R50, timed interleaved with tdnzoo's TDN-R50 and TSN-R50."""
    from ..models import create_model

    if config.device != "cpu" or config.dtype != "fp32":
        raise ValueError("--official-tdn is measured on CPU in fp32 only")
    torch.manual_seed(0)
    official = build_official_tdn(config.official_tdn, num_segments=config.num_segments, num_classes=config.num_classes)
    official.eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "official.pth.tar"
        torch.save({"state_dict": {f"module.{k}": v for k, v in official.state_dict().items()}}, ckpt)
        ours = create_model("tdn_resnet50", num_classes=config.num_classes, num_segments=config.num_segments,
                            checkpoint_path=ckpt).eval()
    tsn = create_model("tsn_resnet50", num_classes=config.num_classes, num_segments=config.num_segments).eval()
    size = config.size
    x = torch.randn(config.batch, ours.num_frames, 3, size, size)
    x_official = x.reshape(config.batch, -1, size, size)
    x_tsn = x.view(config.batch, config.num_segments, 5, 3, size, size)[:, :, 2]
    with torch.inference_mode():
        expected = official(x_official)
        got = ours(x)
    rel = float((got - expected).abs().max() / expected.abs().max())

    def run(model, inp):
        def fn():
            with torch.inference_mode():
                return model(inp)
        return fn

    t_official, t_ours, t_tsn = time_interleaved(
        [run(official, x_official), run(ours, x), run(tsn, x_tsn)], rounds=config.rounds, warmup=config.warmup
    )
    return {
        "model": "official TDN-R50 (MCG-NJU/TDN)",
        "method": "tdn-official",
        "backbone": "resnet50 (official)",
        "params": sum(p.numel() for p in official.parameters()),
        "gflops": next((r["gflops"] for r in rows if r["model"] == "tdn_resnet50"), float("nan")),
        "elementwise_gflops": None,
        "latency_ms": t_official.median * 1e3,
        "latency_spread_ms": t_official.spread * 1e3,
        "latency_ratio": paired_ratio(t_official.samples, t_tsn.samples, fallback=t_official.median / t_tsn.median),
        "tdnzoo_tdn_latency_ratio_same_run": paired_ratio(t_ours.samples, t_tsn.samples,
                                                          fallback=t_ours.median / t_tsn.median),
        "max_relative_logit_difference": rel,
    }
