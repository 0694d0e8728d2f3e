"""The speed report: params, GFLOPs, latency, throughput, training step and memory, in one process.

Every model is timed round-robin with the others (interleaved), so machine drift hits all of
them alike, and each is compared with TSN on the same backbone measured in the same run.
"""
from __future__ import annotations

import contextlib
import copy
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..flops import flop_breakdown
from .allocator import fix_malloc_thresholds
from .machine import machine_info, malloc_description
from .memory import peak_memory_bytes
from .timing import Timing, paired_ratio, time_interleaved

__all__ = ["SpeedConfig", "run_speed_benchmark", "write_speed_report"]

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SpeedConfig:
    """What to measure. Defaults finish in a few minutes on a 2-core CPU (reduced frame size)."""

    methods: tuple[str, ...] = ("tsn", "tsm", "tdn")
    backbones: tuple[str, ...] = ("resnet50",)
    models: tuple[str, ...] = ()  # explicit names; overrides methods x backbones
    num_segments: int = 8
    size: int = 160
    batch: int = 1
    throughput_batch: int = 4
    rounds: int = 16
    train_rounds: int = 8
    warmup: int = 2
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    train: bool = True
    throughput: bool = True
    num_classes: int = 174
    official_tdn: str | None = None
    # glibc's malloc thresholds fixed for the process (see .allocator); False keeps the process's
    fixed_malloc: bool = True

    def model_names(self) -> list[str]:
        if self.models:
            return list(self.models)
        return [f"{m}_{b}" for b in self.backbones for m in self.methods]


@dataclass
class SpeedResult:
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _autocast(config: SpeedConfig):
    dtype = _DTYPES[config.dtype]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=config.device.split(":")[0], dtype=dtype)


def _prepare(model: torch.nn.Module, config: SpeedConfig) -> torch.nn.Module:
    model = model.to(config.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _maybe_compile(model: torch.nn.Module, config: SpeedConfig) -> Callable:
    return torch.compile(model) if config.compile else model


def run_speed_benchmark(config: SpeedConfig, *, progress: bool = True) -> SpeedResult:
    """Measure every model of ``config`` in this process, interleaved; see :class:`SpeedConfig`."""
    from tqdm.auto import tqdm

    from ..models import create_model

    if config.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {config.dtype!r}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    names = config.model_names()
    thresholds = fix_malloc_thresholds() if config.fixed_malloc else None
    result = SpeedResult(settings=asdict(config), machine=machine_info(config.device))
    result.machine["malloc"] = malloc_description(thresholds)

    models, infer_fns, batch_fns, train_fns, rows = [], [], [], [], []
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, num_classes=config.num_classes, num_segments=config.num_segments).eval()
        # A backbone that takes one frame size only (a ViT, Swin) is timed at that size.
        size = model.pretrained_cfg["input_size"][-1] if model.pretrained_cfg.get("fixed_input_size") else config.size
        fc = flop_breakdown(model, input_size=size)
        if size != config.size:
            result.notes.append(f"{name} takes {size}x{size} frames only: timed at that size")
        row = {
            "model": name,
            "method": model.method,
            "backbone": model.backbone_name,
            "size": size,
            "params": fc.params,
            "gflops": fc.gflops,
            "elementwise_gflops": fc.elementwise_gflops,
        }
        model = _prepare(model, config)
        run_eval = _maybe_compile(model, config)
        shape = (model.num_frames, 3, size, size)
        x = torch.randn(config.batch, *shape, device=config.device)
        xb = torch.randn(config.throughput_batch, *shape, device=config.device)

        def infer(run=run_eval, inp=x):
            with torch.inference_mode(), _autocast(config):
                return run(inp)

        def infer_batch(run=run_eval, inp=xb):
            with torch.inference_mode(), _autocast(config):
                return run(inp)

        trainee = _prepare(copy.deepcopy(model).train(), config)
        run_train = _maybe_compile(trainee, config)
        optimizer = torch.optim.SGD(trainee.parameters(), lr=1e-4, momentum=0.9)
        target = torch.zeros(config.batch, dtype=torch.long, device=config.device)

        def train_step(run=run_train, opt=optimizer, inp=x, y=target):
            opt.zero_grad(set_to_none=True)
            with _autocast(config):
                loss = F.cross_entropy(run(inp).float(), y)
            loss.backward()
            opt.step()
            return loss

        row["peak_memory_mb"] = peak_memory_bytes(infer, config.device) / 2**20
        models.append(model)
        infer_fns.append(infer)
        batch_fns.append(infer_batch)
        train_fns.append(train_step)
        rows.append(row)

    total = len(names) * (config.warmup + config.rounds)
    if config.throughput:
        total += len(names) * (config.warmup + config.rounds)
    if config.train:
        total += len(names) * (config.warmup + config.train_rounds)
    bar = tqdm(total=total, desc="tdnzoo bench", unit="run", disable=not progress)
    latency = time_interleaved(infer_fns, rounds=config.rounds, warmup=config.warmup, device=config.device,
                               progress=bar.update)
    _store_timings(rows, latency, "latency")
    if config.throughput:
        batched = time_interleaved(batch_fns, rounds=config.rounds, warmup=config.warmup, device=config.device,
                                   progress=bar.update)
        for row, t in zip(rows, batched):
            row["throughput_clips_s"] = config.throughput_batch / t.median
    if config.train:
        steps = time_interleaved(train_fns, rounds=config.train_rounds, warmup=config.warmup, device=config.device,
                                 progress=bar.update)
        _store_timings(rows, steps, "train_step")
    bar.close()

    _add_ratios(rows)
    result.rows = rows
    if config.official_tdn:
        from .official import compare_official_tdn

        official = compare_official_tdn(config, rows)
        result.rows.append(official)
        _add_ratios(result.rows)
        result.notes.append(
            "official TDN-R50 timed in its own interleaved run with tdnzoo's TDN-R50 and TSN-R50: "
            f"official/TSN {official['latency_ratio']:.3f}, tdnzoo TDN/TSN "
            f"{official['tdnzoo_tdn_latency_ratio_same_run']:.3f}; same weights, logits agree to "
            f"{official['max_relative_logit_difference']:.1e} of the largest"
        )
    else:
        result.notes.append("official TDN not timed: pass --official-tdn PATH to a checkout of MCG-NJU/TDN to add it")
    return result


def _store_timings(rows: list[dict[str, Any]], timings: list[Timing], key: str) -> None:
    """``{key}_ms`` (median), ``{key}_spread_ms`` (IQR) and every round, ``{key}_samples_ms``; and
    where counted the page faults per call, ``{key}_page_faults`` (median) and every round."""
    for row, t in zip(rows, timings):
        row[f"{key}_ms"] = t.median * 1e3
        row[f"{key}_spread_ms"] = t.spread * 1e3
        row[f"{key}_samples_ms"] = [v * 1e3 for v in t.samples]
        if t.faults is not None:
            row[f"{key}_page_faults"] = statistics.median(t.faults)
            row[f"{key}_page_faults_samples"] = list(t.faults)


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each model's ratio to TSN on the same backbone, measured in the same run.

    Times are ratios of paired rounds: round ``i`` of a model against round ``i`` of TSN, which
    ran moments apart, then the median over rounds. On a shared machine whose speed drifts
    this is steadier than the ratio of the two medians, which can come from different moments.
    """
    tsn = {r["backbone"]: r for r in rows if r["method"] == "tsn"}
    for row in rows:
        base = tsn.get(row["backbone"])
        if base is None:
            continue
        for key in ("latency_ms", "train_step_ms", "gflops"):
            if key in row and key in base and base[key]:
                samples = key.replace("_ms", "_samples_ms") if key.endswith("_ms") else None
                row[f"{key.split('_')[0]}_ratio"] = paired_ratio(
                    row.get(samples) if samples else None, base.get(samples) if samples else None,
                    fallback=row[key] / base[key],
                )


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(result: SpeedResult) -> str:
    s = result.settings
    head = (
        f"{s['num_segments']} segments, {s['size']}x{s['size']}, {s['dtype']}, device {s['device']}, "
        f"latency batch {s['batch']}, throughput batch {s['throughput_batch']}, "
        f"channels_last {s['channels_last']}, compile {s['compile']}; medians of {s['rounds']} interleaved rounds "
        f"({s['train_rounds']} for the training step); ratios to TSN on the same backbone are medians of per-round ratios, same run."
    )
    lines = [
        head,
        "",
        "| model | params (M) | GFLOPs/view | latency ms (IQR) | throughput clips/s | train step ms (IQR) "
        "| peak mem MB | GFLOPs ratio | latency ratio | train ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result.rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} | {r['gflops']:.2f} | "
            f"{_fmt(r.get('latency_ms'), '.1f')} ({_fmt(r.get('latency_spread_ms'), '.1f')}) | "
            f"{_fmt(r.get('throughput_clips_s'), '.2f')} | "
            f"{_fmt(r.get('train_step_ms'), '.1f')} ({_fmt(r.get('train_step_spread_ms'), '.1f')}) | "
            f"{_fmt(r.get('peak_memory_mb'), '.0f')} | {_fmt(r.get('gflops_ratio'), '.3f')} | "
            f"{_fmt(r.get('latency_ratio'), '.3f')} | {_fmt(r.get('train_ratio'), '.3f')} |"
        )
    faults = [
        f"{r['model']} {r['latency_page_faults']:.0f}"
        + (f" / {r['train_step_page_faults']:.0f}" if "train_step_page_faults" in r else "")
        for r in result.rows if "latency_page_faults" in r
    ]
    if faults:
        what = "latency call / training step" if any("train_step_page_faults" in r for r in result.rows) else "latency call"
        lines += ["", f"Minor page faults per {what}, median: " + "; ".join(faults) + "."]
    m = result.machine
    lines += ["", f"Machine: {m['cpu']}, {m['cpu_count']} cores ({m['torch_threads']} torch threads), "
              f"{m.get('gpu', 'no GPU used')}; torch {m['torch']}, timm {m['timm']}, tdnzoo {m['tdnzoo']}, "
              f"Python {m['python']}; {m.get('malloc', 'allocator not recorded')}."]
    lines += [f"Note: {n}" for n in result.notes]
    return "\n".join(lines)


def _plot(result: SpeedResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in rows:
        ax1.scatter(r["gflops"], r["latency_ms"], s=40)
        ax1.annotate(r["model"], (r["gflops"], r["latency_ms"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax1.set_xlabel("GFLOPs per view (fvcore)")
    ax1.set_ylabel(f"latency, batch {result.settings['batch']} (ms)")
    ax1.set_title("cost vs latency")
    ax1.margins(x=0.35, y=0.15)  # room for the labels
    with_tp = [r for r in rows if r.get("throughput_clips_s")]
    if with_tp:
        ax2.barh([r["model"] for r in with_tp], [r["throughput_clips_s"] for r in with_tp], color="tab:blue")
        ax2.set_xlabel(f"throughput, batch {result.settings['throughput_batch']} (clips/s)")
    else:  # --no-throughput: say so rather than draw empty axes
        ax2.text(0.5, 0.5, "throughput not measured\n(--no-throughput)", ha="center", va="center",
                 transform=ax2.transAxes)
        ax2.set_axis_off()
    ax2.set_title("throughput")
    fig.suptitle(f"tdnzoo bench: {result.settings['num_segments']} segments, {result.settings['size']}px, "
                 f"{result.settings['dtype']}, {result.settings['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_speed_report(result: SpeedResult, output: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``results.json`` and ``speed.png`` into ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "json": out / "results.json", "plot": out / "speed.png"}
    paths["markdown"].write_text("# tdnzoo speed report\n\n" + markdown_table(result) + "\n")
    paths["json"].write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    _plot(result, paths["plot"])
    return paths
