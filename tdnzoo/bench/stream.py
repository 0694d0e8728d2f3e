"""The cost of live video: one streaming step against a whole clip forward of the same causal model.

``tdnzoo bench stream``. For each model (causal, ``create_model(name, causal=True)``) and variant
(eager; compiled: ``torch.compile`` of the :func:`tdnzoo.fuse_for_inference` copy, inductor's
freezing on CPU, for the clip forward and for the streamer's step alike), one process times, in
interleaved rounds, the clip forward on ``T`` segments and one :meth:`tdnzoo.models.Streamer.step`
on the next segment. The ratio step / clip is the median of the per-round ratios; the ideal is
``1/T`` plus the head. Before timing, the streamer runs through one clip segment by segment and
its logits are compared with ``forward_segments`` of that clip (the exactness column).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .allocator import fix_malloc_thresholds
from .machine import machine_info, malloc_description
from .timing import paired_ratio, time_interleaved

__all__ = ["StreamConfig", "StreamResult", "markdown_table", "run_stream_benchmark", "write_stream_report"]


@dataclass
class StreamConfig:
    """Settings of the streaming benchmark (defaults: the issue's T = 8, 224x224, batch 1)."""

    models: tuple[str, ...] = ("tsm_resnet50", "tdn_resnet50")
    num_segments: int = 8
    size: int = 224
    batch: int = 1
    num_classes: int = 400
    rounds: int = 8
    warmup: int = 1
    compile: bool = True
    fixed_malloc: bool = True

    def __post_init__(self) -> None:
        counts = {"num_segments": self.num_segments, "size": self.size, "batch": self.batch, "rounds": self.rounds}
        bad = {k: v for k, v in counts.items() if v < 1}
        if bad or self.warmup < 0 or not self.models:
            raise ValueError(f"need models and num_segments, size, batch, rounds >= 1 and warmup >= 0, got {counts}, "
                             f"warmup {self.warmup}, models {self.models}")


@dataclass
class StreamResult:
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def run_stream_benchmark(config: StreamConfig, *, progress: bool = True) -> StreamResult:
    """Time step against clip for every model and variant of ``config`` in this process."""
    # Freezing: as `tdnzoo bench --compile`, weights become constants folded and prepacked for oneDNN
    # (the streamer's caches are buffers it writes, which inductor keeps as inputs).
    with torch._inductor.config.patch(freezing=config.compile):
        return _run(config, progress=progress)


def _run(config: StreamConfig, *, progress: bool) -> StreamResult:
    from ..models import create_model, fuse_for_inference, stream

    thresholds = fix_malloc_thresholds() if config.fixed_malloc else None
    result = StreamResult(settings=asdict(config), machine=machine_info("cpu"))
    result.machine["malloc"] = malloc_description(thresholds)
    variants = ("eager", "compiled") if config.compile else ("eager",)
    fns, rows = [], []
    for name in config.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=config.num_classes, num_segments=config.num_segments, causal=True).eval()
        frames = model.frames_per_segment
        clip = torch.randn(config.batch, model.num_frames, 3, config.size, config.size)
        segments = list(clip.split(frames, dim=1))
        for variant in variants:
            if progress:
                print(f"{name} {variant}: preparing (compiling takes minutes)", flush=True)
            runner = model if variant == "eager" else fuse_for_inference(model)
            live = stream(runner, compile=variant == "compiled")
            forward_segments = runner.forward_segments if variant == "eager" else torch.compile(runner.forward_segments)
            with torch.inference_mode():
                offline = forward_segments(clip)  # compiles the clip graph (the timed call is the same one)
            steps = torch.stack([live.step(s) for s in segments], dim=1)  # compiles the step graph at step 2

            def run_clip(run=forward_segments, inp=clip):
                with torch.inference_mode():
                    return run(inp)

            def run_step(live=live, inp=segments[-1]):
                return live.step(inp)

            fns += [run_clip, run_step]
            rows.append({"model": name, "variant": variant, "method": model.method, "backbone": model.backbone_name,
                         "num_segments": config.num_segments, "frames_per_segment": frames, "size": config.size,
                         "batch": config.batch, "cache_mb": live.cache_bytes() / 2**20,
                         "max_relative_error": _relative_error(steps, offline)})
    if progress:
        print(f"timing {len(fns)} functions, {config.rounds} interleaved rounds", flush=True)
    timings = time_interleaved(fns, rounds=config.rounds, warmup=config.warmup)
    for i, row in enumerate(rows):
        clip_t, step_t = timings[2 * i], timings[2 * i + 1]
        row.update(clip_ms=clip_t.median * 1e3, step_ms=step_t.median * 1e3,
                   step_spread_ms=step_t.spread * 1e3,
                   ratio=paired_ratio(step_t.samples, clip_t.samples, fallback=step_t.median / clip_t.median),
                   segments_per_s=config.batch / step_t.median,
                   frames_per_s=config.batch * row["frames_per_segment"] / step_t.median)
        result.rows.append(row)
    return result


def markdown_table(result: StreamResult) -> str:
    s = result.settings
    lines = [
        f"Streaming step against a {s['num_segments']}-segment clip forward, {s['size']}x{s['size']}, batch {s['batch']}, "
        f"causal models; medians of {s['rounds']} interleaved rounds (ratio: median of per-round ratios).",
        "",
        "| model | variant | clip forward ms | step ms | step / clip | segments/s | frames/s | cache MiB | max rel. error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['clip_ms']:.1f} | {r['step_ms']:.1f} | {r['ratio']:.3f} | "
                     f"{r['segments_per_s']:.1f} | {r['frames_per_s']:.1f} | {r['cache_mb']:.2f} | "
                     f"{r['max_relative_error']:.1e} |")
    m = result.machine
    lines += [
        "",
        "frames/s: input frames a step consumes (its segment's frames) per second. Compiled: "
        "`torch.compile(tdnzoo.fuse_for_inference(model))` for the clip, `tdnzoo.stream(fused, compile=True)` for the "
        "step (inductor, freezing). Max rel. error: the streamer's logits on one clip, step by step, against "
        "`forward_segments` of that clip.",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads; torch {m['torch']}, "
        f"timm {m['timm']}, tdnzoo {m['tdnzoo']}; {m['malloc']}.",
    ]
    return "\n".join(lines)


def write_stream_report(result: StreamResult, output: str | Path) -> dict[str, Path]:
    """``report.md`` and ``results.json`` in ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "json": out / "results.json"}
    paths["markdown"].write_text("# Streaming cost\n\n" + markdown_table(result) + "\n")
    paths["json"].write_text(json.dumps(asdict(result), indent=2) + "\n")
    return paths
