"""TSN, TSM and TDN over timm's families: the one-model-per-family list, the check, the table.

A timm *family* is the module that defines a model (``timm.models.resnet``, ...). The list holds
the smallest model of each family by parameter count (a ``test_*`` variant where timm has one),
generated once by :func:`smallest_per_family` and committed as ``timm_families.json`` beside this
module; a test checks that it still covers every timm family. :func:`check_family` builds a model
with one method and runs it; :func:`family_table` runs the list and writes the table of
``docs/backbones.md`` (``tdnzoo backbones table --write docs/backbones.md``).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedBackboneError
from ..models.video import METHODS

__all__ = [
    "FAMILY_LIST",
    "FamilyCheck",
    "calibrate_norms",
    "check_family",
    "family_kind",
    "family_table",
    "load_family_list",
    "perturb_weights",
    "recount_flops",
    "reversed_segments",
    "smallest_per_family",
    "timm_families",
]

FAMILY_LIST = Path(__file__).with_name("timm_families.json")
# Families whose smallest model is too large to run three times on a CPU in a table run: checked
# with fewer blocks (the table says so).
TABLE_KWARGS: dict[str, dict[str, Any]] = {
    "beit": {"depth": 2},
    "deepseek_vit": {"depth": 2},
    "gemma4_vit": {"depth": 2},
    "naflexvit": {"depth": 2},
    "qwen3_vit": {"depth": 2},
    "vision_transformer_sam": {"depth": 2},
}


def timm_families() -> dict[str, list[str]]:
    """timm's model names grouped by the module (family) that defines them."""
    import timm

    return {module: timm.list_models(module=module) for module in timm.list_modules()}


def smallest_per_family() -> list[dict[str, Any]]:
    """The smallest model of each timm family by parameter count, sized on the meta device (no memory)."""
    import timm

    rows = []
    for family, names in sorted(timm_families().items()):
        sizes = []
        for name in names:
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = timm.create_model(name, pretrained=False)
            except Exception:  # noqa: BLE001 - a model that does not build on meta is not a candidate
                continue
            sizes.append((sum(p.numel() for p in model.parameters()), name))
        if sizes:
            params, name = min(sizes)
            rows.append({"family": family, "model": name, "params": params})
    return rows


def write_family_list(path: str | Path = FAMILY_LIST) -> list[dict[str, Any]]:
    """Generate the one-model-per-family list and write it as JSON (with the timm version)."""
    import timm

    rows = smallest_per_family()
    Path(path).write_text(json.dumps({"timm": timm.__version__, "families": rows}, indent=1) + "\n")
    return rows


def load_family_list(path: str | Path = FAMILY_LIST) -> list[dict[str, Any]]:
    """The committed one-model-per-family list: ``[{'family', 'model', 'params'}, ...]``."""
    return json.loads(Path(path).read_text())["families"]


def family_kind(model: nn.Module) -> str:
    """``'cnn'``, ``'transformer'`` or ``'hybrid'``, from what mixes positions in a timm model's blocks.

    A transformer's blocks mix tokens by attention (or pooling, gating, recurrence: a token mixer),
    a CNN's by spatial convolutions; a hybrid has both in its blocks, or token-mixing blocks after
    a convolutional stem of three or more spatial convs (a ResNet stem under a ViT).
    """
    from ..models.backbone import analyze_backbone
    from ..models.ops import is_mixing_op, is_token_mixer

    layout = analyze_backbone(model)
    mixers = [m for b in layout.blocks for m in b.module.modules()]
    attention = any(is_token_mixer(m, layout.attention) and is_mixing_op(m, layout.attention) for m in mixers)
    convs = any(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 and max(m.stride) == 1 and m.kernel_size != m.stride
                for m in mixers)
    if not attention:
        return "cnn"
    stem_convs = sum(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for _, s in layout.stem for m in s.modules())
    return "hybrid" if convs or stem_convs >= 3 else "transformer"


def perturb_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that make every branch count, whatever timm's init (zero-initialised norms,
    layer scales of 1e-6, heads at zero): convolutions and linear layers at unit gain (fan-in
    scaled), norm and scale vectors in [0.5, 1.5], biases in [-0.1, 0.1]. Position embeddings and
    tokens keep their values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.dim() >= 2 and p.shape[0] > 1 and "pos" not in leaf and "token" not in leaf and "relative" not in name:
                p.normal_(0.0, 1.0 / math.sqrt(max(1, p[0].numel())), generator=g)
            elif p.dim() == 1 and leaf == "bias":
                p.uniform_(-0.1, 0.1, generator=g)
            elif p.dim() == 1:
                p.uniform_(0.5, 1.5, generator=g)
    return model


def calibrate_norms(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BatchNorm running statistics to those of ``x`` (one pass in training mode at momentum 1)
    and leave the model in eval mode: after :func:`perturb_weights`, maps stay of order one."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    return model


def reversed_segments(x: torch.Tensor, num_segments: int) -> torch.Tensor:
    """A clip ``[B, T, 3, H, W]`` with its segments in reverse order (frames within a segment kept)."""
    b, t = x.shape[:2]
    return x.reshape(b, num_segments, t // num_segments, *x.shape[2:]).flip(1).reshape_as(x)


@dataclass
class FamilyCheck:
    """What :func:`check_family` found for one model and method."""

    family: str
    model: str
    method: str
    ok: bool
    error: str | None = None
    refused: bool = False
    size: int = 0
    params: int = 0
    temporal_modules: int = 0
    reversal_change: float = float("nan")
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def check_family(
    family: str,
    model_name: str,
    method: str,
    *,
    num_segments: int = 2,
    size: int | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    backward: bool = True,
) -> FamilyCheck:
    """Build ``<method>_<model_name>`` and run it: a training step (forward and backward), then an eval
    forward on a clip and on the clip with its segments reversed.

    ``reversal_change`` is the largest change of a logit under reversal relative to the largest
    logit, with weights from :func:`perturb_weights` and :func:`calibrate_norms`: above 0 when the
    temporal modules act, 0 up to rounding for TSN (a mean over segments). A deliberate
    :class:`~tdnzoo.UnsupportedBackboneError` is reported as ``refused``; any other error as not ok.
    """
    from ..models.factory import create_model
    from ..models.insertion import TemporalInsert

    start = time.perf_counter()
    result = FamilyCheck(family, model_name, method, ok=False)
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(f"{method}_{model_name}", num_classes=5, num_segments=num_segments, drop_rate=0.0,
                                 backbone_kwargs=dict(backbone_kwargs or {}))
        result.size = side = size or max(model.probe_size, model.min_size)
        result.params = sum(p.numel() for p in model.parameters())
        result.temporal_modules = sum(isinstance(m, TemporalInsert) for m in model.modules())
        x = torch.randn(1, model.num_frames, 3, side, side, generator=torch.Generator().manual_seed(1))
        if backward:
            model.train()
            model(x).square().mean().backward()
        calibrate_norms(perturb_weights(model), x)
        with torch.no_grad():
            y = model(x)
            y_reversed = model(reversed_segments(x, num_segments))
        result.reversal_change = float((y - y_reversed).abs().max() / y.abs().max().clamp_min(1e-12))
        result.ok = bool(torch.isfinite(y).all())
    except UnsupportedBackboneError as exc:
        result.refused, result.error = True, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported: a crash is what the check is for
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - start
    return result


def _gflops(model_name: str, method: str, size: int, kwargs: dict[str, Any]) -> float:
    from ..models.factory import create_model
    from .flops import count_flops

    model = create_model(f"{method}_{model_name}", num_classes=5, num_segments=2, backbone_kwargs=kwargs)
    return count_flops(model, input_size=size)


def _count_gflops(entry: dict[str, Any]) -> None:
    """Set ``entry['gflops_ratio']`` (TDN over TSN) for a family both methods run on."""
    entry.pop("gflops_error", None)
    if not (entry["tsn"]["ok"] and entry["tdn"]["ok"]):
        return
    name, kwargs = entry["model"], entry["kwargs"]
    try:
        tsn = _gflops(name, "tsn", entry["tsn"]["size"], kwargs)
        tdn = _gflops(name, "tdn", entry["tdn"]["size"], kwargs)
        entry["gflops_ratio"] = tdn / tsn if tsn else None
    except Exception as exc:  # noqa: BLE001 - a table cell, not a failure of the model
        entry["gflops_ratio"] = None
        entry["gflops_error"] = f"{type(exc).__name__}: {exc}"


def recount_flops(results: list[dict[str, Any]], *, progress: bool = False) -> list[dict[str, Any]]:
    """A saved table run with its GFLOPs column counted again (after a change to the counter);
    the checks are kept as they were run."""
    for entry in results:
        before = entry.get("gflops_ratio")
        _count_gflops(entry)
        if progress:
            print(entry["family"], entry["model"], before, "->", entry.get("gflops_ratio"), flush=True)
    return results


def family_table(rows: list[dict[str, Any]] | None = None, *, progress: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """Check every family of the list with TSN, TSM and TDN; the markdown table and the raw results."""
    import timm

    rows = rows if rows is not None else load_family_list()
    results = []
    for row in rows:
        family, name = row["family"], row["model"]
        kwargs = TABLE_KWARGS.get(family, {})
        entry: dict[str, Any] = {"family": family, "model": name, "kwargs": kwargs}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                entry["kind"] = family_kind(timm.create_model(name, **kwargs))
        except Exception as exc:  # noqa: BLE001 - a family tdnzoo cannot read at all
            entry["kind"] = "-"
            entry["kind_error"] = str(exc)
        for method in METHODS:
            check = check_family(family, name, method, backbone_kwargs=kwargs)
            entry[method] = asdict(check)
        _count_gflops(entry)
        results.append(entry)
        if progress:
            print(family, name, *(("ok" if entry[m]["ok"] else "refused" if entry[m]["refused"] else "FAIL")
                                  for m in METHODS), flush=True)
    return render_table(results), results


# Reversal changes of the logits (relative to the largest) that count as rounding (TSN must stay
# below: reordering a batch changes oneDNN's sums, amplified by deep stacks of random weights) and
# as the temporal modules acting (TSM and TDN must exceed it, 5x clear of rounding). Over the
# families they act by 0.01 (TSM on the post-norm EVA and SwinV2 transformers at full size, whose
# norms damp each residual branch) to above 1; TSN's change is 0 on the CPU.
ROUNDING, ACTS = 1e-3, 5e-3


def _status(check: dict[str, Any], method: str) -> str:
    change = check["reversal_change"]
    if check["ok"] and (change < ROUNDING if method == "tsn" else change > ACTS):
        return "yes"
    if check["ok"]:
        return "**no effect**"
    return "refused" if check["refused"] else "**fails**"


def render_table(results: list[dict[str, Any]]) -> str:
    """The family table (markdown), a per-kind summary and every refusal with its reason."""
    lines = [
        "| family | kind | example model | TSN | TSM | TDN | params TSN / TDN (M) | GFLOPs TDN/TSN | checked at |",
        "| --- | --- | --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in results:
        params = f"{r['tsn']['params'] / 1e6:.2f} / {r['tdn']['params'] / 1e6:.2f}" if r["tdn"]["ok"] else (
            f"{r['tsn']['params'] / 1e6:.2f} / -" if r["tsn"]["ok"] else "-")
        ratio = f"{r['gflops_ratio']:.2f}" if r.get("gflops_ratio") else "-"
        size = r["tsn"]["size"] or r["tdn"]["size"]
        reduced = ", " + ", ".join(f"{k}={v}" for k, v in r["kwargs"].items()) if r["kwargs"] else ""
        lines.append(f"| {r['family']} | {r['kind']} | `{r['model']}` | " + " | ".join(
            _status(r[m], m) for m in METHODS) + f" | {params} | {ratio} | {size}px{reduced} |")
    lines += ["", "| kind | families | TSN | TSM | TDN |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind in ("cnn", "hybrid", "transformer"):
        group = [r for r in results if r["kind"] == kind]
        counts = [sum(_status(r[m], m) == "yes" for r in group) for m in METHODS]
        lines.append(f"| {kind} | {len(group)} | " + " | ".join(f"{c}/{len(group)}" for c in counts) + " |")
    refusals = [(r, m) for r in results for m in METHODS if not r[m]["ok"]]
    if refusals:
        lines += ["", "Refused (and why):", ""]
        for r, m in refusals:
            reason = (r[m]["error"] or "").split(": ", 1)[-1].split("cannot be used by tdnzoo: ")[-1]
            lines.append(f"- {m.upper()} on `{r['model']}` ({r['family']}): {reason}")
    return "\n".join(lines)
