"""The speed report: params, GFLOPs, latency, throughput, training step and memory, in one process.

Every model is timed round-robin with the others (interleaved), so machine drift hits all of
them alike, and each is compared with TSN on the same backbone measured in the same run.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import time
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
COMPILE_MODES = ("none", "latency", "all")
# A timing whose interquartile range exceeds this fraction of its median is flagged as noisy.
NOISE_LIMIT = 0.10
COMPILED_WHAT = {"none": "nothing", "latency": "latency (one compile per model)",
                 "all": "latency, throughput and training step"}


@dataclass
class SpeedConfig:
    """What to measure. Defaults finish in a few minutes on a 2-core CPU (reduced frame size).

    ``compile`` says what is also timed through ``torch.compile``, in the same interleaved run as
    eager: ``"latency"`` (the default) the latency call only, compiled once per model; ``"all"`` also
    the throughput batches and the training step; ``"none"`` nothing. Inference compiles
    :func:`tdnzoo.fuse_for_inference`'s BN-folded copy (inductor, with its freezing on CPU, where
    weights become constants); the training step compiles the model itself. ``True``/``False``
    mean ``"all"``/``"none"``.
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
    compile: str | bool = "latency"
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
        if isinstance(self.compile, bool):
            self.compile = "all" if self.compile else "none"
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")

    def model_names(self) -> list[str]:
        if self.models:
            return list(self.models)
        return [f"{m}_{b}" for b in self.backbones for m in self.methods]

    def variants(self) -> tuple[str, ...]:
        return ("eager",) if self.compile == "none" else ("eager", "compiled")

    def times(self, variant: str, what: str) -> bool:
        """Whether ``what`` (``latency``, ``throughput``, ``train``) is timed for ``variant``."""
        enabled = {"latency": True, "throughput": self.throughput, "train": self.train}[what]
        return enabled and (variant == "eager" or what == "latency" or self.compile == "all")


@dataclass
class SpeedResult:
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: timings too noisy to trust (spread above NOISE_LIMIT of the median), with the machine's load
    warnings: list[str] = field(default_factory=list)


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
    # Each timing's calls, with the row they belong to: (row index, function).
    infer_fns: list[tuple[int, Callable]] = []
    train_fns: list[tuple[int, Callable]] = []
    batch_fns: dict[int, list[tuple[int, Callable]]] = {b: [] for b in config.throughput_batches}
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

            for b in config.throughput_batches if config.times(variant, "throughput") else ():
                xb = torch.randn(b, *shape, device=config.device)

                def infer_batch(run=run_eval, inp=xb):
                    with torch.inference_mode(), _autocast(config):
                        return run(inp)

                batch_fns[b].append((len(rows), infer_batch))

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

            # The first call compiles (timed: the one compile of this model's latency graph) and warms up,
            # outside the measured region.
            start = time.perf_counter()
            infer()
            if variant == "compiled":
                row["compile_s"] = time.perf_counter() - start
            # On CPU live tensors are counted through the dispatcher, which compiled code bypasses.
            if variant == "eager" or config.device != "cpu":
                row["activation_peak_mb"] = peak_memory_bytes(infer, config.device) / 2**20
            infer_fns.append((len(rows), infer))
            if config.times(variant, "train"):
                train_fns.append((len(rows), train_step))
            rows.append(row)

    total = len(infer_fns) * (config.warmup + config.rounds)
    total += sum(len(fns) for fns in batch_fns.values()) * (config.warmup + config.rounds)
    total += len(train_fns) * (config.warmup + config.train_rounds)
    bar = tqdm(total=total, desc="tdnzoo bench", unit="run", disable=not progress)
    result.machine["load_average_before"] = _load_average()
    _store_timings(rows, infer_fns, "latency", _timed(infer_fns, config.rounds, config, bar))
    for b, fns in batch_fns.items():
        for (i, _), t in zip(fns, _timed(fns, config.rounds, config, bar)):
            rows[i].setdefault("throughput_clips_s", {})[b] = b / t.median
            rows[i].setdefault("throughput_samples_ms", {})[b] = [v * 1e3 for v in t.samples]
    _store_timings(rows, train_fns, "train_step", _timed(train_fns, config.train_rounds, config, bar))
    bar.close()
    result.machine["load_average_after"] = _load_average()

    _add_ratios(rows)
    result.rows = rows
    result.warnings = noise_warnings(rows, result.machine)
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


def _timed(fns: list[tuple[int, Callable]], rounds: int, config: SpeedConfig, bar: Any) -> list[Timing]:
    if not fns:
        return []
    return time_interleaved([fn for _, fn in fns], rounds=rounds, warmup=config.warmup, device=config.device,
                            progress=bar.update)


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def noise_warnings(rows: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """One line per timing whose interquartile range exceeds ``NOISE_LIMIT`` of its median, with the
    machine's load average: on a busy machine the medians and the ratios cannot be trusted."""
    noisy = []
    for row in rows:
        for key, what in (("latency", "latency"), ("train_step", "training step")):
            median, spread = row.get(f"{key}_ms"), row.get(f"{key}_spread_ms")
            if median and spread is not None and spread > NOISE_LIMIT * median:
                noisy.append(f"{_label(row)} {what} {median:.1f} ms, IQR {spread:.1f} ms ({spread / median:.0%})")
    if not noisy:
        return []
    load = machine.get("load_average_before"), machine.get("load_average_after")
    cores = machine.get("cpu_count")
    busy = (f"load average {', '.join(map(str, load[0]))} before and {', '.join(map(str, load[1]))} after the "
            f"timings on {cores} cores" if load[0] and load[1] else "load average not available")
    return [f"noisy timings (spread above {NOISE_LIMIT:.0%} of the median; {busy}): these numbers and their "
            f"ratios are not to be trusted; rerun on a quiet machine"] + noisy


def _store_timings(rows: list[dict[str, Any]], fns: list[tuple[int, Callable]], key: str,
                   timings: list[Timing]) -> None:
    """``{key}_ms`` (median), ``{key}_spread_ms`` (IQR) and every round, ``{key}_samples_ms``; and
    where counted the page faults per call, ``{key}_page_faults`` (median) and every round."""
    for (i, _), t in zip(fns, timings):
        row = rows[i]
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


def _variants(rows: list[dict[str, Any]]) -> list[str]:
    """The timed forms in report order: ``eager``, ``compiled`` (and any other a row names)."""
    return list(dict.fromkeys(r.get("variant", "eager") for r in rows))


def _by_model(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {variant: row}}``: the report's lines are models, its columns the forms timed."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["model"], {})[r.get("variant", "eager")] = r
    return out


def _with_spread(row: dict[str, Any] | None, key: str) -> str:
    if row is None or row.get(f"{key}_ms") is None:
        return "-"
    return f"{row[f'{key}_ms']:.1f} ({_fmt(row.get(f'{key}_spread_ms'), '.1f')})"


def _columns(rows: list[dict[str, Any]], batches: list[int]) -> list[tuple[str, Callable[[dict], str]]]:
    """(title, cell of a model's ``{variant: row}``) for every measure the run has, each form beside the others."""
    variants = _variants(rows)
    eager = "eager"

    def has(variant: str, key: str) -> bool:
        return any(r.get("variant", "eager") == variant and r.get(key) is not None for r in rows)

    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("model", lambda v: next(iter(v.values()))["model"]),
        ("params (M)", lambda v: _fmt(next(iter(v.values()))["params"] / 1e6, ".2f")),
        ("GFLOPs/view", lambda v: _fmt(next(iter(v.values())).get("gflops"), ".2f")),
    ]
    for variant in variants:
        columns.append((f"latency ms {variant} (IQR)", lambda v, k=variant: _with_spread(v.get(k), "latency")))
    for variant in variants:
        if variant != eager:
            columns.append((f"{variant} / eager", lambda v, k=variant: _fmt((v.get(k) or {}).get("latency_vs_eager"), ".3f")))
    for variant in variants:
        columns.append((f"latency ratio {variant}", lambda v, k=variant: _fmt((v.get(k) or {}).get("latency_ratio"), ".3f")))
    for b in batches:
        for variant in variants:
            if has(variant, "throughput_clips_s"):
                columns.append((f"clips/s at batch {b} {variant}", lambda v, k=variant, b=b: _fmt(
                    ((v.get(k) or {}).get("throughput_clips_s") or {}).get(b, ((v.get(k) or {}).get(
                        "throughput_clips_s") or {}).get(str(b))), ".2f")))
    for variant in variants:
        if has(variant, "train_step_ms"):
            columns.append((f"train step ms {variant} (IQR)", lambda v, k=variant: _with_spread(v.get(k), "train_step")))
            columns.append((f"train ratio {variant}", lambda v, k=variant: _fmt((v.get(k) or {}).get("train_ratio"), ".3f")))
    columns.append(("activation peak MB (eager)", lambda v: _fmt((v.get(eager) or {}).get("activation_peak_mb"), ".0f")))
    columns.append(("GFLOPs ratio", lambda v: _fmt(next(iter(v.values())).get("gflops_ratio"), ".3f")))
    return columns


def markdown_table(result: SpeedResult) -> str:
    """The report: one line per model, each timed form (eager, compiled, ...) in columns side by side."""
    s = result.settings
    batches = [int(b) for b in s["throughput_batches"]] if s["throughput"] else []
    mode = s["compile"] if isinstance(s["compile"], str) else ("all" if s["compile"] else "none")
    head = (
        f"{s['num_segments']} segments, {s['size']}x{s['size']}, {s['dtype']}, device {s['device']}, "
        f"latency batch {s['batch']}, throughput batch {', '.join(map(str, batches)) or '-'}, "
        f"channels_last {s['channels_last']}, compiled: {COMPILED_WHAT[mode]}; medians of {s['rounds']} interleaved "
        f"rounds ({s['train_rounds']} for the training step), IQR in brackets; ratios to TSN on the same backbone "
        "and form, and compiled / eager, are medians of per-round ratios, same run."
    )
    columns = _columns(result.rows, batches)
    lines = [head, "", "| " + " | ".join(t for t, _ in columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    for variants in _by_model(result.rows).values():
        lines.append("| " + " | ".join(cell(variants) for _, cell in columns) + " |")
    if result.warnings:
        lines += ["", "**Warning: " + result.warnings[0] + ".**", ""] + [f"- {w}" for w in result.warnings[1:]]
    faults = [
        f"{_label(r)} {r['latency_page_faults']:.0f}"
        + (f" / {r['train_step_page_faults']:.0f}" if "train_step_page_faults" in r else "")
        for r in result.rows if "latency_page_faults" in r
    ]
    if faults:
        what = "latency call / training step" if any("train_step_page_faults" in r for r in result.rows) else "latency call"
        lines += ["", f"Minor page faults per {what}, median: " + "; ".join(faults) + "."]
    compile_times = [f"{r['model']} {r['compile_s']:.0f} s" for r in result.rows if r.get("compile_s") is not None]
    if mode != "none":
        lines += ["", "Compiled: inference runs `torch.compile(tdnzoo.fuse_for_inference(model))` (inductor, default "
                  "mode; BatchNorms folded into the convolutions; inductor's freezing on CPU), compiled once per model "
                  "at the latency batch" + (" and again at each throughput batch; the training step runs "
                  "`torch.compile(model)`" if mode == "all" else "; throughput and the training step are timed "
                  "eager (`--compile all` compiles them too)") + ". First call (the compile) per model: "
                  + ", ".join(compile_times) + ". The activation peak (tensors created by one eager inference call "
                  "and alive at once, weights excluded) is counted for eager calls only on the CPU."]
    else:
        lines += ["", "Activation peak: tensors created by one inference call and alive at once, weights excluded."]
    m = result.machine
    load = m.get("load_average_before")
    lines += ["", f"Machine: {m['cpu']}, {m['cpu_count']} cores ({m['torch_threads']} torch threads), "
              f"{m.get('gpu', 'no GPU used')}; torch {m['torch']}, timm {m['timm']}, tdnzoo {m['tdnzoo']}, "
              f"Python {m['python']}; {m.get('malloc', 'allocator not recorded')}"
              + (f"; load average {', '.join(map(str, load))} before the timings" if load else "") + "."]
    lines += [f"Note: {n}" for n in result.notes]
    return "\n".join(lines)


def _iqr(samples: list[float] | None, median: float) -> tuple[float, float]:
    """First and third quartiles of ``samples`` (the median twice without enough of them)."""
    if not samples or len(samples) < 2:
        return median, median
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[0], q[2]


def _plot(result: SpeedResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"eager": "o", "compiled": "s"}
    for r in rows:
        if r.get("gflops") is None or r.get("latency_ms") is None:  # FLOPs not counted (no fvcore)
            continue
        low, high = _iqr(r.get("latency_samples_ms"), r["latency_ms"])
        ax1.errorbar(r["gflops"], r["latency_ms"], yerr=[[r["latency_ms"] - low], [high - r["latency_ms"]]],
                     fmt=markers.get(r.get("variant", "eager"), "D"), capsize=3, ms=6)
        ax1.annotate(_label(r), (r["gflops"], r["latency_ms"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax1.set_xlabel("GFLOPs per view (fvcore)")
    ax1.set_ylabel(f"latency, batch {result.settings['batch']} (ms; bars: IQR)")
    ax1.set_title("cost vs latency")
    ax1.margins(x=0.35, y=0.15)  # room for the labels
    with_tp = [r for r in rows if r.get("throughput_clips_s")]
    if with_tp:
        batch = max(with_tp[0]["throughput_clips_s"], key=int)  # the largest batch measured
        values, errors = [], [[], []]
        for r in with_tp:
            clips = r["throughput_clips_s"][batch]
            ms = (r.get("throughput_samples_ms") or {}).get(batch)
            slow, fast = _iqr(ms, int(batch) * 1e3 / clips)  # IQR of the call time, as clips/s
            values.append(clips)
            errors[0].append(clips - int(batch) * 1e3 / fast)
            errors[1].append(int(batch) * 1e3 / slow - clips)
        ax2.barh([_label(r) for r in with_tp], values, xerr=errors, capsize=3, color="tab:blue")
        ax2.set_xlabel(f"throughput, batch {batch} (clips/s; bars: IQR)")
    else:  # --no-throughput: say so rather than draw empty axes
        ax2.text(0.5, 0.5, "throughput not measured\n(--no-throughput)", ha="center", va="center",
                 transform=ax2.transAxes)
        ax2.set_axis_off()
    ax2.set_title("throughput")
    noisy = "; NOISY: see the report's warning" if result.warnings else ""
    fig.suptitle(f"tdnzoo bench: {result.settings['num_segments']} segments, {result.settings['size']}px, "
                 f"{result.settings['dtype']}, {result.settings['device']}{noisy}", fontsize=10,
                 color="tab:red" if noisy else "black")
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
