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

from ..models import METHODS, fuse_for_inference
from .allocator import fix_malloc_thresholds
from .flops import flop_breakdown
from .machine import machine_info, malloc_description
from .memory import peak_memory_bytes
from .timing import Timing, paired_ratio, time_interleaved

__all__ = ["SpeedConfig", "run_speed_benchmark", "write_speed_report"]

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SpeedConfig:
    """What to measure. Defaults finish in a few minutes on a 2-core CPU (reduced frame size).

    With ``compile`` every model is timed twice in the same interleaved run, as it is (eager) and
    through ``torch.compile``: inference compiles :func:`tdnzoo.fuse_for_inference`'s BN-folded
    copy (with inductor's freezing on CPU, where weights become constants), the training step
    compiles the model itself.
    """

    methods: tuple[str, ...] = METHODS
    backbones: tuple[str, ...] = ("resnet50",)
    models: tuple[str, ...] = ()  # explicit names; overrides methods x backbones
    num_segments: int = 8
    size: int = 160
    batch: int = 1
    throughput_batches: tuple[int, ...] = (4,)
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

    def __post_init__(self) -> None:
        # Checked here, before a run fixes the process's malloc thresholds or builds any model.
        for name in ("num_segments", "size", "batch", "rounds", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.throughput_batches or min(self.throughput_batches) < 1:
            raise ValueError(f"throughput batches must be >= 1, got {self.throughput_batches}")
        if self.train and self.train_rounds < 1:
            raise ValueError(f"train_rounds must be >= 1 (or skip the training step), got {self.train_rounds}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if not self.model_names():
            raise ValueError("no models to time: give --models, or --methods and --backbones")

    def model_names(self) -> list[str]:
        if self.models:
            return list(self.models)
        return [f"{m}_{b}" for b in self.backbones for m in self.methods]

    def variants(self) -> tuple[str, ...]:
        return ("eager", "compiled") if self.compile else ("eager",)


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


def _inference_runner(model: torch.nn.Module, variant: str, config: SpeedConfig) -> Callable:
    """What an inference call runs: the model, or the compiled BN-folded copy of it."""
    if variant == "eager":
        return model
    return torch.compile(_prepare(fuse_for_inference(model), config))


def _measure_flops(model: torch.nn.Module, size: int) -> tuple[dict[str, Any], str | None]:
    """``params`` and, with fvcore installed, ``gflops``; or a note saying why FLOPs are missing."""
    params = sum(p.numel() for p in model.parameters())
    try:
        fc = flop_breakdown(model, input_size=size)
    except ImportError as exc:  # fvcore missing (e.g. a GPU machine installed with --no-deps)
        return {"params": params, "gflops": None, "elementwise_gflops": None}, f"GFLOPs not counted: {exc}"
    return {"params": fc.params, "gflops": fc.gflops, "elementwise_gflops": fc.elementwise_gflops}, None


def run_speed_benchmark(config: SpeedConfig, *, progress: bool = True) -> SpeedResult:
    """Measure every model of ``config`` in this process, interleaved; see :class:`SpeedConfig`."""
    # Inductor's freezing (CPU inference): weights become constants that it folds and prepacks for
    # oneDNN. A compile-time setting, read when each graph compiles, so it spans the whole run; it
    # does not apply to the training step's graphs, which need gradients.
    with torch._inductor.config.patch(freezing=config.compile and config.device == "cpu"):
        return _run_speed_benchmark(config, progress=progress)


def _run_speed_benchmark(config: SpeedConfig, *, progress: bool) -> SpeedResult:
    from tqdm.auto import tqdm

    from ..models import create_model

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    names = config.model_names()
    thresholds = fix_malloc_thresholds() if config.fixed_malloc and config.device == "cpu" else None
    result = SpeedResult(settings=asdict(config), machine=machine_info(config.device))
    result.machine["malloc"] = malloc_description(thresholds)

    rows: list[dict[str, Any]] = []
    infer_fns: list[Callable] = []
    train_fns: list[Callable] = []
    batch_fns: dict[int, list[Callable]] = {b: [] for b in config.throughput_batches}
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, num_classes=config.num_classes, num_segments=config.num_segments).eval()
        # A backbone that takes one frame size only (a ViT, Swin) is timed at that size.
        size = model.pretrained_cfg["input_size"][-1] if model.pretrained_cfg.get("fixed_input_size") else config.size
        if size != config.size:
            result.notes.append(f"{name} takes {size}x{size} frames only: timed at that size")
        counts, note = _measure_flops(model, size)
        if note and note not in result.notes:
            result.notes.append(note)
        model = _prepare(model, config)
        shape = (model.num_frames, 3, size, size)
        x = torch.randn(config.batch, *shape, device=config.device)
        target = torch.zeros(config.batch, dtype=torch.long, device=config.device)
        for variant in config.variants():
            row = {"model": name, "variant": variant, "method": model.method, "backbone": model.backbone_name,
                   "size": size, **counts}
            run_eval = _inference_runner(model, variant, config)

            def infer(run=run_eval, inp=x):
                with torch.inference_mode(), _autocast(config):
                    return run(inp)

            for b in config.throughput_batches:
                xb = torch.randn(b, *shape, device=config.device)

                def infer_batch(run=run_eval, inp=xb):
                    with torch.inference_mode(), _autocast(config):
                        return run(inp)

                batch_fns[b].append(infer_batch)

            trainee = _prepare(copy.deepcopy(model).train(), config)
            run_train = torch.compile(trainee) if variant == "compiled" else trainee
            optimizer = torch.optim.SGD(trainee.parameters(), lr=1e-4, momentum=0.9)

            def train_step(run=run_train, opt=optimizer, inp=x, y=target):
                opt.zero_grad(set_to_none=True)
                with _autocast(config):
                    loss = F.cross_entropy(run(inp).float(), y)
                loss.backward()
                opt.step()
                return loss

            # On CPU live tensors are counted through the dispatcher, which compiled code bypasses.
            if variant == "eager" or config.device != "cpu":
                infer()  # compile (and warm up) outside the measured region
                row["peak_memory_mb"] = peak_memory_bytes(infer, config.device) / 2**20
            infer_fns.append(infer)
            train_fns.append(train_step)
            rows.append(row)

    total = len(rows) * (config.warmup + config.rounds)
    if config.throughput:
        total += len(rows) * len(config.throughput_batches) * (config.warmup + config.rounds)
    if config.train:
        total += len(rows) * (config.warmup + config.train_rounds)
    bar = tqdm(total=total, desc="tdnzoo bench", unit="run", disable=not progress)
    latency = time_interleaved(infer_fns, rounds=config.rounds, warmup=config.warmup, device=config.device,
                               progress=bar.update)
    _store_timings(rows, latency, "latency")
    if config.throughput:
        for b, fns in batch_fns.items():
            batched = time_interleaved(fns, rounds=config.rounds, warmup=config.warmup, device=config.device,
                                       progress=bar.update)
            for row, t in zip(rows, batched):
                row.setdefault("throughput_clips_s", {})[b] = b / t.median
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
    """Each model's ratio to TSN on the same backbone and variant, and a compiled model's ratio to
    the same model eager, all measured in the same run.

    Times are ratios of paired rounds: round ``i`` of a model against round ``i`` of the other,
    which ran moments apart, then the median over rounds. On a shared machine whose speed drifts
    this is steadier than the ratio of the two medians, which can come from different moments.
    """
    tsn = {(r["backbone"], r.get("variant", "eager")): r for r in rows if r["method"] == "tsn"}
    eager = {r["model"]: r for r in rows if r.get("variant", "eager") == "eager"}
    for row in rows:
        variant = row.get("variant", "eager")
        base = tsn.get((row["backbone"], variant))
        if base is not None:
            for key in ("latency_ms", "train_step_ms", "gflops"):
                ratio = _ratio(row, base, key)
                if ratio is not None:
                    row[f"{key.split('_')[0]}_ratio"] = ratio
        if variant != "eager" and row["model"] in eager:
            for key in ("latency_ms", "train_step_ms"):
                ratio = _ratio(row, eager[row["model"]], key)
                if ratio is not None:
                    row[f"{key.split('_')[0]}_vs_eager"] = ratio


def _ratio(row: dict[str, Any], base: dict[str, Any], key: str) -> float | None:
    if row.get(key) is None or not base.get(key):
        return None
    samples = key.replace("_ms", "_samples_ms") if key.endswith("_ms") else None
    return paired_ratio(row.get(samples) if samples else None, base.get(samples) if samples else None,
                        fallback=row[key] / base[key])


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _label(row: dict[str, Any]) -> str:
    return row["model"] + (" (compiled)" if row.get("variant", "eager") != "eager" else "")


def markdown_table(result: SpeedResult) -> str:
    s = result.settings
    batches = [int(b) for b in s["throughput_batches"]] if s["throughput"] else []
    compiled = s["compile"]
    head = (
        f"{s['num_segments']} segments, {s['size']}x{s['size']}, {s['dtype']}, device {s['device']}, "
        f"latency batch {s['batch']}, throughput batch {', '.join(map(str, batches)) or '-'}, "
        f"channels_last {s['channels_last']}, compile {compiled}; medians of {s['rounds']} interleaved rounds "
        f"({s['train_rounds']} for the training step); ratios to TSN on the same backbone"
        f"{' (eager to eager, compiled to compiled)' if compiled else ''} are medians of per-round ratios, same run."
    )
    columns = ["model", "params (M)", "GFLOPs/view", "latency ms (IQR)"]
    columns += [f"clips/s at batch {b}" for b in batches]
    columns += ["train step ms (IQR)", "peak mem MB", "GFLOPs ratio", "latency ratio", "train ratio"]
    if compiled:
        columns += ["latency vs eager", "train vs eager"]
    lines = [head, "", "| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    for r in result.rows:
        throughput = r.get("throughput_clips_s") or {}
        cells = [_label(r), _fmt(r["params"] / 1e6, ".2f"), _fmt(r.get("gflops"), ".2f"),
                 f"{_fmt(r.get('latency_ms'), '.1f')} ({_fmt(r.get('latency_spread_ms'), '.1f')})"]
        cells += [_fmt(throughput.get(b, throughput.get(str(b))), ".2f") for b in batches]
        cells += [f"{_fmt(r.get('train_step_ms'), '.1f')} ({_fmt(r.get('train_step_spread_ms'), '.1f')})",
                  _fmt(r.get("peak_memory_mb"), ".0f"), _fmt(r.get("gflops_ratio"), ".3f"),
                  _fmt(r.get("latency_ratio"), ".3f"), _fmt(r.get("train_ratio"), ".3f")]
        if compiled:
            cells += [_fmt(r.get("latency_vs_eager"), ".3f"), _fmt(r.get("train_vs_eager"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    faults = [
        f"{_label(r)} {r['latency_page_faults']:.0f}"
        + (f" / {r['train_step_page_faults']:.0f}" if "train_step_page_faults" in r else "")
        for r in result.rows if "latency_page_faults" in r
    ]
    if faults:
        what = "latency call / training step" if any("train_step_page_faults" in r for r in result.rows) else "latency call"
        lines += ["", f"Minor page faults per {what}, median: " + "; ".join(faults) + "."]
    if compiled:
        lines += ["", "Compiled: inference runs `torch.compile(tdnzoo.fuse_for_inference(model))` (inductor, "
                  "freezing on CPU), the training step `torch.compile(model)`; CPU peak memory is counted for "
                  "eager calls only."]
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
        if r.get("gflops") is None:  # FLOPs not counted (no fvcore): no point to place
            continue
        ax1.scatter(r["gflops"], r["latency_ms"], s=40)
        ax1.annotate(_label(r), (r["gflops"], r["latency_ms"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax1.set_xlabel("GFLOPs per view (fvcore)")
    ax1.set_ylabel(f"latency, batch {result.settings['batch']} (ms)")
    ax1.set_title("cost vs latency")
    ax1.margins(x=0.35, y=0.15)  # room for the labels
    with_tp = [r for r in rows if r.get("throughput_clips_s")]
    if with_tp:
        batch = max(with_tp[0]["throughput_clips_s"], key=int)  # the largest batch measured
        ax2.barh([_label(r) for r in with_tp], [r["throughput_clips_s"][batch] for r in with_tp], color="tab:blue")
        ax2.set_xlabel(f"throughput, batch {batch} (clips/s)")
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
