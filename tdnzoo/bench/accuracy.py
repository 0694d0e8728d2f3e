"""The accuracy benchmark: TSN, TSM and TDN trained alike on the synthetic temporal-reasoning dataset.

One call generates the dataset (:mod:`tdnzoo.data.synthetic`, mp4 files in the folder layout), trains every
method with :func:`tdnzoo.train.train` on the same backbone, budget and seed (so through the real decoding,
sampling and transform pipeline), evaluates the last checkpoints with :func:`tdnzoo.eval.evaluate` and writes
a report folder:

* ``results.json``: per model top-1, top-5, accuracy on the time-reversed pairs (and the chance-50% direction
  accuracy inside a pair), accuracy on the appearance classes, per-class accuracy, confusion matrix, parameters,
  GFLOPs per view, training time; plus the dataset settings, seed, machine and library versions.
* ``report.md``: the table, the settings and a reading of the result.
* ``learning_curves.png`` (from each run's ``metrics.jsonl``) and ``confusion_<method>.png`` per model.

Reports of ``tdnzoo eval`` on real datasets (``report.json``) merge into the same report (``merge_eval``), with the
published numbers beside the measured ones.

Example:
    >>> from tdnzoo.bench.accuracy import run_accuracy_benchmark
    >>> results = run_accuracy_benchmark("bench_acc")          # the default size: ~10 min of 2-core CPU time
    >>> {m["method"]: m["reversal_top1"] for m in results["models"]}
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..models.methods import METHODS, is_method
from ..version import __version__

# Training, evaluation and the video generator are imported where used: the CLI reads DEFAULTS at start-up.

__all__ = [
    "DEFAULTS",
    "METHODS",
    "PRESETS",
    "summarize_runs",
    "class_group_metrics",
    "format_summary",
    "load_eval_reports",
    "merge_reports",
    "run_accuracy_benchmark",
    "write_accuracy_report",
]

_log = logging.getLogger(__name__)

# Default classes: the five time-reversal pairs, where a single frame (and TSN's order-free average) cannot tell
# the classes of a pair apart, and two appearance controls that any frame names.
DEFAULT_CLASSES = (
    "move_left_to_right", "move_right_to_left", "move_top_to_bottom", "move_bottom_to_top", "approach", "recede",
    "rotate_clockwise", "rotate_counterclockwise", "appear", "disappear", "appearance_checkerboard",
    "appearance_stripes",
)
# The default size: generation, three trainings and evaluation in about 10 minutes of 2-core CPU time (measured
# in the README). timm's ``test_resnet`` (a 0.4M-parameter ResNet) trained from scratch is about 5x faster per clip
# than resnet18 here, so it gets 20 epochs where resnet18 would get 4: from scratch, epochs matter more than width.
# Measured on the default data: AdamW at lr 1e-3 leaves TSM at TSN's level after 20 epochs (TDN, whose frame
# differences make motion salient, learns anyway); at 3e-3 both temporal models pull away from TSN.
DEFAULTS: dict[str, Any] = {
    "classes": DEFAULT_CLASSES,
    "videos_per_class": 24,
    "frames": 16,
    "video_size": 64,
    "num_segments": 4,
    "size": 64,
    "backbone": "test_resnet",
    "epochs": 20,
    "batch_size": 8,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "dropout": 0.2,
    "seed": 0,
    "difficulty": "normal",
    "methods": ("tsn", "tsm", "tdn"),
    "seeds": 1,
    "workers": 1,
}
# Report presets: the methods and seeds a report compares (the other settings are DEFAULTS). ``ablation`` is the
# TDN paper's ablation twice: S-TDM alone and L-TDM alone on plain TSN, both (TDN), against TSM; and, as in the paper,
# on a baseline that keeps TDN's temporal conv (tsn+tconv, then tdn-ltdm = +S-TDM, tdn-stdm = +L-TDM); three seeds.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"methods": DEFAULTS["methods"], "seeds": 1},
    "ablation": {"methods": ("tsn", "tsn+stdm", "tsn+ltdm", "tdn", "tsm", "tsn+tconv", "tdn-stdm", "tdn-ltdm"),
                 "seeds": 3},
}
# The columns that get a mean and a spread over seeds.
SUMMARY_METRICS = ("top1", "top5", "reversal_top1", "reversal_direction", "appearance_top1", "train_time_s")
RESULTS, REPORT, CURVES = "results.json", "report.md", "learning_curves.png"


# ----------------------------------------------------------------------------------------------------------
# Metrics on top of EvalResult.


def class_group_metrics(probs, labels, class_names: Sequence[str], manifest: dict) -> dict[str, Any]:
    """Accuracy on the time-reversed pairs and on the appearance classes.

    Args:
        probs: ``[N, C]`` scores (softmax averaged over views), ``labels``: ``[N]``.
        class_names: the label order.
        manifest: the synthetic dataset's manifest (``reverse_of``, ``reversal_pairs``, ``appearance_classes``).

    Returns:
        ``reversal_top1``: top-1 over the videos of reversal-pair classes (all classes compete);
        ``reversal_direction``: over the same videos, how often the true class scores above its time-reversed
        partner (chance 50%, whatever else the model confuses); ``appearance_top1``: top-1 over the appearance
        classes; and the video counts (``None`` for a group with no videos).
    """
    index = {n: i for i, n in enumerate(class_names)}
    pair_classes = {c for pair in manifest.get("reversal_pairs", []) for c in pair if c in index}
    appearance = {c for c in manifest.get("appearance_classes", []) if c in index}
    pred = probs.argmax(dim=1)
    rev_hits = dir_hits = rev_n = app_hits = app_n = 0
    for row, label in enumerate(labels.tolist()):
        name = class_names[label]
        if name in pair_classes:
            partner = index[manifest["reverse_of"][name]]
            rev_n += 1
            rev_hits += int(pred[row] == label)
            dir_hits += int(probs[row, label] > probs[row, partner])
        elif name in appearance:
            app_n += 1
            app_hits += int(pred[row] == label)
    return {
        "reversal_top1": 100.0 * rev_hits / rev_n if rev_n else None,
        "reversal_direction": 100.0 * dir_hits / rev_n if rev_n else None,
        "reversal_videos": rev_n,
        "appearance_top1": 100.0 * app_hits / app_n if app_n else None,
        "appearance_videos": app_n,
    }


def _gflops(model, size: int) -> float | None:
    """fvcore GFLOPs (multiply-adds) of one view ``[1, T, 3, size, size]``; None when fvcore cannot trace it."""
    import torch

    from .flops import fvcore_nn

    try:
        FlopCountAnalysis = fvcore_nn().FlopCountAnalysis
    except ImportError:
        return None
    x = torch.zeros(1, model.num_frames, 3, size, size)
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        counter = FlopCountAnalysis(model, x)
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        return float(counter.total()) / 1e9


def _cpu_seconds() -> float | None:
    """User + system CPU seconds of this process and its finished children (None where unavailable).

    On a shared machine wall time depends on the neighbours; CPU time much less so."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _environment() -> dict[str, Any]:
    import av
    import numpy as np
    import timm
    import torch

    cpu = platform.processor() or platform.machine()
    try:  # the model name is in /proc/cpuinfo on Linux; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "versions": {"tdnzoo": __version__, "torch": torch.__version__, "timm": timm.__version__,
                     "av": av.__version__, "numpy": np.__version__},
    }


# ----------------------------------------------------------------------------------------------------------
# The benchmark.


def _flip_label_map(class_names: Sequence[str]) -> dict[int, int]:
    """Label swaps under a horizontal flip (the generator's ``HFLIP_OF``: left/right, clockwise/counter-clockwise)."""
    from ..data.synthetic import HFLIP_OF

    index = {n: i for i, n in enumerate(class_names)}
    return {index[a]: index[b] for a, b in HFLIP_OF.items() if a != b and a in index and b in index}


def _check_args(methods: Sequence[str], epochs: int, num_segments: int, size: int, videos_per_class: int,
                seeds: int = 1) -> None:
    unknown = [m for m in methods if not is_method(m)]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty list of {', '.join(METHODS)} or compositions PRESET+BLOCK / "
                         f"PRESET-BLOCK (e.g. tsn+stdm, tdn-ltdm); got {list(methods)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods repeat a name: {list(methods)}")
    for name, value, low in (("epochs", epochs, 1), ("num_segments", num_segments, 1), ("size", size, 16),
                             ("videos_per_class", videos_per_class, 2), ("seeds", seeds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def run_accuracy_benchmark(
    output: str | os.PathLike,
    *,
    classes: Iterable[str] | None = None,
    videos_per_class: int = DEFAULTS["videos_per_class"],
    frames: int = DEFAULTS["frames"],
    video_size: int | None = None,
    num_segments: int = DEFAULTS["num_segments"],
    size: int = DEFAULTS["size"],
    backbone: str = DEFAULTS["backbone"],
    epochs: int = DEFAULTS["epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    dropout: float = DEFAULTS["dropout"],
    seed: int = DEFAULTS["seed"],
    difficulty: str = DEFAULTS["difficulty"],
    methods: Sequence[str] = DEFAULTS["methods"],
    seeds: int = DEFAULTS["seeds"],
    workers: int = DEFAULTS["workers"],
    data_dir: str | os.PathLike | None = None,
    merge_eval: Sequence[str | os.PathLike] = (),
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the synthetic dataset, train and evaluate each method, and write the report folder.

    Every method gets the same backbone, clip layout (``num_segments`` segments; TDN reads 5 frames per segment
    as it is defined to), input size, optimiser (AdamW, cosine schedule), epochs, batch and seed. Runs resume:
    calling again with the same ``output`` reuses the dataset and finished runs and only redoes what is missing.

    Args:
        output: the report folder (the dataset goes to ``output/data`` unless ``data_dir`` is given, the runs to
            ``output/runs/<method>``, or ``output/runs/<method>/seed<k>`` with several seeds).
        classes: synthetic class names (default :data:`DEFAULT_CLASSES`: five reversal pairs, two appearance
            classes).
        videos_per_class: videos per class (3/4 train, 1/4 validation).
        frames: frames per video. video_size: video side in pixels (default: ``size``).
        num_segments: segments per clip. size: training and evaluation crop side.
        backbone: a timm backbone name; models are ``<method>_<backbone>``.
        epochs, batch_size, lr, weight_decay, dropout: the training budget, the same for every method.
        seed: dataset seed, and the initialisation, sampling and augmentation seed of the first run.
        difficulty: synthetic difficulty (``easy``, ``normal``, ``hard``).
        methods: methods (``tsn``, ``tsm``, ``tdn``, registered ones) or compositions of them (``tsn+stdm``,
            ``tdn-ltdm``: :mod:`tdnzoo.models.methods`).
        seeds: runs per method, seeded ``seed``, ``seed + 1``, ... on the same dataset; the report gives each
            column's mean and spread (sample standard deviation, min and max) over them.
        workers: DataLoader workers (and video-generation processes).
        merge_eval: ``tdnzoo eval`` report folders or ``report.json`` files to add to the report.
        device: ``cpu`` (default, for comparable timings) or a CUDA device.
        threads: torch intra-op threads (default: torch's, i.e. ``OMP_NUM_THREADS`` or one per core); on a busy
            machine 1 is much faster than oversubscribed cores.

    Returns:
        The content of ``results.json``.
    """
    import torch

    from ..data.synthetic import generate_dataset
    from ..eval import build_eval_dataset, evaluate, load_eval_model
    from ..train import TrainConfig, train

    methods = tuple(methods)
    _check_args(methods, epochs, num_segments, size, videos_per_class, seeds)
    video_size = size if video_size is None else video_size
    output = Path(output)
    eval_reports = load_eval_reports(merge_eval)  # fail on a bad path before an hour of training
    # ... and on an unknown backbone or class before the first file is written
    from ..data.synthetic import _check_class
    from ..models import parse_model_name

    parse_model_name(f"{methods[0]}_{backbone}")
    for name in classes or ():
        _check_class(name)
    if data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)  # an unwritable one fails before the report folder exists
    output.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_dir) if data_dir is not None else output / "data"
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    manifest = generate_dataset(
        data_root, classes=list(classes) if classes is not None else list(DEFAULT_CLASSES),
        videos_per_class=videos_per_class, frames=frames, size=video_size, seed=seed, difficulty=difficulty,
        workers=max(1, workers), progress=progress,
    )
    generation_s = time.perf_counter() - started
    class_names = list(manifest["classes"])
    flip_map = _flip_label_map(class_names)

    models = []
    for method, run_seed in ((m, seed + k) for k in range(seeds) for m in methods):  # seed-major: every seed whole
        name = f"{method}_{backbone}"
        run_dir = output / "runs" / method if seeds == 1 else output / "runs" / method / f"seed{run_seed}"
        cfg = TrainConfig(
            model=name, data_root=str(data_root), output=str(run_dir), num_segments=num_segments, input_size=size,
            workers=workers, flip=True, flip_label_map=flip_map, mirrored_classes=True, dropout=dropout,
            optimizer="adamw", lr=lr, weight_decay=weight_decay, schedule="cosine", batch_size=batch_size,
            epochs=epochs, seed=run_seed, resume=(run_dir / "last.pt").is_file(), progress=progress, device=device,
        )
        _log.warning("training %s for %d epochs (seed %d)", name, epochs, run_seed)
        t0 = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - t0
        history = result.history
        model = load_eval_model(checkpoint=result.last_checkpoint)
        ds = build_eval_dataset(model, root=data_root, split="val", views="1x1", input_size=size,
                                class_names=class_names)
        t0 = time.perf_counter()
        ev = evaluate(model, ds, batch_size=batch_size, workers=workers, device=device)
        eval_s = time.perf_counter() - t0
        groups = class_group_metrics(ev.probs, ev.labels, class_names, manifest)
        entry = {
            "method": method,
            "model": name,
            "seed": run_seed,
            "top1": ev.top1,
            "top5": ev.top5,
            **groups,
            "mean_class_accuracy": ev.mean_class_accuracy,
            "per_class_accuracy": {class_names[c]: a for c, a in ev.per_class_accuracy.items()},
            "confusion": ev.confusion.tolist(),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops_per_view": _gflops(model, size),
            "num_frames": model.num_frames,
            # The sum of the epochs' training time (from metrics.jsonl, so it survives resumes); validation aside.
            "train_time_s": sum(float(r.get("epoch_time_s", 0.0)) for r in history),
            "train_wall_s_this_call": wall,
            "eval_time_s": eval_s,
            "val_videos": ev.num_videos,
            "checkpoint": str(result.last_checkpoint),
            "history": [{k: r.get(k) for k in ("epoch", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
                                               "epoch_time_s")} for r in history],
        }
        models.append(entry)
        _log.warning("%s: top-1 %.1f, reversal pairs %.1f, appearance %s", name, ev.top1,
                     groups["reversal_top1"] or 0.0, groups["appearance_top1"])
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    s = manifest["settings"]
    results = {
        "format": "tdnzoo-accuracy-bench",
        "version": 1,
        "settings": {
            "classes": class_names, "videos_per_class": s["videos_per_class"], "frames": s["frames"],
            "video_size": s["size"], "difficulty": s["difficulty"], "splits": s["splits"], "codec": s["codec"],
            "generator_version": s["generator_version"], "num_segments": num_segments, "size": size,
            "backbone": backbone, "epochs": epochs, "batch_size": batch_size, "optimizer": "adamw",
            "schedule": "cosine", "lr": lr, "weight_decay": weight_decay, "dropout": dropout, "seed": seed,
            "flip_label_map": {class_names[a]: class_names[b] for a, b in flip_map.items()},
            "methods": list(methods), "seeds": seeds, "device": device, "workers": workers, "eval_views": "1x1",
            "train_videos": sum(manifest["counts"]["train"].values()),
            "val_videos": sum(manifest["counts"]["val"].values()),
            "reversal_pairs": manifest["reversal_pairs"], "appearance_classes": manifest["appearance_classes"],
        },
        "chance": {"top1": 100.0 / len(class_names), "reversal_direction": 50.0},
        **_environment(),
        "generation_s": generation_s,
        "total_s": time.perf_counter() - started,
        "total_cpu_s": None if cpu_started is None else _cpu_seconds() - cpu_started,
        "models": models,
        "summary": summarize_runs(models),
        "real_datasets": eval_reports,
    }
    write_accuracy_report(results, output)
    return results


def summarize_runs(models: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, over its runs (seeds): ``{"runs": n, metric: {"mean", "std", "min", "max"}}``.

    ``std`` is the sample standard deviation (``None`` for one run); a metric missing in some run is left out.
    """
    import statistics

    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(m["method"] for m in models):
        runs = [m for m in models if m["method"] == method]
        entry: dict[str, Any] = {"runs": len(runs), "seeds": [r.get("seed") for r in runs]}
        for metric in SUMMARY_METRICS:
            values = [float(r[metric]) for r in runs if r.get(metric) is not None]
            if len(values) != len(runs) or not values:
                continue
            entry[metric] = {"mean": statistics.fmean(values),
                             "std": statistics.stdev(values) if len(values) > 1 else None,
                             "min": min(values), "max": max(values)}
        out[method] = entry
    return out


# ----------------------------------------------------------------------------------------------------------
# Real datasets: `tdnzoo eval` reports.


def load_eval_reports(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows from ``tdnzoo eval`` reports (``report.json`` files, or the folders holding them).

    Raises:
        ValueError: a path that is not a ``tdnzoo eval`` report.
    """
    rows = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            path = path / "report.json"
        if not path.is_file():
            raise ValueError(f"no tdnzoo eval report at {raw} (expected a report.json or the --output folder of "
                             "`tdnzoo eval`)")
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); expected a `tdnzoo eval` report.json") from exc
        missing = [k for k in ("model", "top1", "top5", "views", "num_videos") if k not in (report or {})]
        if not isinstance(report, dict) or missing:
            raise ValueError(f"{path} is not a `tdnzoo eval` report: missing {', '.join(missing)}")
        published = report.get("published") or {}
        rows.append({
            "model": report["model"],
            "dataset": report.get("dataset", ""),
            "split": report.get("split"),
            "checkpoint": report.get("checkpoint"),
            "num_segments": report.get("num_segments"),
            "views": report["views"],
            "num_videos": report["num_videos"],
            "top1": float(report["top1"]),
            "top5": float(report["top5"]),
            "mean_class_accuracy": report.get("mean_class_accuracy"),
            "published_top1": published.get("top1"),
            "published_top5": published.get("top5"),
            "published_views": published.get("views"),
            "published_source": published.get("source"),
            "source_report": str(path),
        })
    return rows


# ----------------------------------------------------------------------------------------------------------
# The report.


def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _means(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method, each metric's mean over its runs (the run itself with one seed)."""
    summary = results.get("summary") or summarize_runs(results["models"])
    return {method: {k: (v["mean"] if isinstance(v, dict) else v) for k, v in entry.items()}
            for method, entry in summary.items()}


def _pm(entry: dict[str, Any], metric: str, digits: int = 1) -> str:
    """``mean ± std`` of a summary entry's metric (``mean`` alone with one run)."""
    value = entry.get(metric)
    if value is None:
        return "–"
    if value.get("std") is None:
        return _f(value["mean"], digits)
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


_BLOCK_NAMES = {"short_term": "S-TDM", "long_term": "L-TDM", "shift": "the shift", "temporal_conv": "the temporal conv"}


def composition_effects(results: dict[str, Any]) -> list[dict[str, Any]]:
    """What each block adds, from the report's own numbers.

    For every two methods whose blocks differ by exactly one (``tsn+stdm`` and ``tsn``: S-TDM; ``tdn`` and
    ``tdn-ltdm``: L-TDM), and for TDN against TSN: the change of the mean reversal top-1 and direction, and
    whether it exceeds the two methods' seed spreads (the sum of their sample standard deviations).
    """
    from ..models.methods import BLOCK_TABLE, METHOD_TABLE, parse_method, resolve_blocks

    summary = results.get("summary") or summarize_runs(results["models"])
    blocks = {}
    for method in summary:
        preset, switches = parse_method(method)
        chosen = resolve_blocks(preset, {k: v for k, v in switches.items() if k in BLOCK_TABLE})
        blocks[method] = frozenset(k for k, on in chosen.items() if on)
    pairs = []
    for keyword in BLOCK_TABLE:
        for method in summary:
            for base in summary:
                if blocks[method] - blocks[base] == {keyword} and blocks[base] < blocks[method]:
                    pairs.append((method, base, f"adding {_BLOCK_NAMES.get(keyword, keyword)}"))
    if "tdn" in summary and "tsn" in summary:
        added = " and ".join(_BLOCK_NAMES.get(str(k), str(k)) for k in METHOD_TABLE["tdn"].keywords())
        pairs.append(("tdn", "tsn", f"adding {added} (TDN)"))
    effects = []
    for method, base, change in pairs:
        row = {"method": method, "base": base, "change": change}
        for metric in ("reversal_top1", "reversal_direction"):
            a, b = summary[method].get(metric), summary[base].get(metric)
            if a is None or b is None:
                continue
            spread = (a["std"] or 0.0) + (b["std"] or 0.0) if a.get("std") is not None and b.get("std") is not None \
                else None
            delta = a["mean"] - b["mean"]
            row[metric] = {"delta": delta, "spread": spread,
                           "beyond_spread": None if spread is None else abs(delta) > spread}
        effects.append(row)
    return effects


def _effects_text(results: dict[str, Any]) -> list[str]:
    lines = []
    for e in composition_effects(results):
        parts = []
        for metric, label in (("reversal_top1", "reversal-pair top-1"), ("reversal_direction", "direction")):
            d = e.get(metric)
            if d is None:
                continue
            verdict = "" if d["beyond_spread"] is None else (
                " (beyond the seed spread)" if d["beyond_spread"] else " (within the seed spread)")
            parts.append(f"{d['delta']:+.1f} points on {label}{verdict}")
        if parts:
            lines.append(f"- {e['change']} to {e['base']} ({e['method']} vs {e['base']}): " + ", ".join(parts))
    return lines


def _reading(results: dict[str, Any]) -> str:
    """A plain reading of the numbers: which methods tell reversed pairs apart, and whether TDN beats TSM."""
    by = _means(results)
    s = results["settings"]
    parts = []
    budget = (f"{s['epochs']} epochs on {s['train_videos']} training videos, {s['backbone']} from scratch at "
              f"{s['size']}px, {s['num_segments']} segments")
    if "tsn" in by:
        d = by["tsn"]["reversal_direction"]
        near = d is not None and abs(d - 50.0) <= 15.0
        parts.append(f"TSN, which averages its segments and so cannot see their order, picks the right direction within "
                     f"a time-reversed pair in {_f(d)}% of those videos (chance 50%)"
                     + (", as expected" if near else "; it is not near chance, which the order-free average should "
                        "make impossible beyond noise and clip-boundary cues"))
    temporal = [m for m in ("tsm", "tdn") if m in by]
    if temporal:
        tsn_d = by.get("tsn", {}).get("reversal_direction")

        def verdict(m: str) -> str:
            d = by[m]["reversal_direction"]
            if tsn_d is None or d is None:
                return f"{m.upper()} {_f(d)}%"
            return f"{m.upper()} {_f(d)}% ({'well above TSN' if d >= tsn_d + 15 else 'not clearly above TSN'})"

        parts.append("the temporal models reach " + ", ".join(verdict(m) for m in temporal))
    if "tsm" in by and "tdn" in by:
        a, b = by["tdn"]["top1"], by["tsm"]["top1"]
        if a > b + 2:
            parts.append(f"TDN beats TSM on top-1 ({_f(a)} vs {_f(b)})")
        elif a < b - 2:
            parts.append(f"TDN does NOT beat TSM at this budget (top-1 {_f(a)} vs {_f(b)}); the paper's margin is "
                         "measured after full training from ImageNet weights, and TDN's extra difference branches "
                         "may need a larger budget (more epochs or videos) to pay off here")
        else:
            parts.append(f"TDN and TSM are within 2 points on top-1 ({_f(a)} vs {_f(b)}), no clear winner at this "
                         "budget")
    app = [f"{m.upper()} {_f(by[m]['appearance_top1'])}%" for m in by if by[m].get("appearance_top1") is not None]
    if app:
        parts.append(f"on the appearance controls, which any single frame names, the methods score {', '.join(app)}")
    n_val = s["val_videos"]
    text = f"With {budget}: " + "; ".join(parts) + "."
    seeds = int(s.get("seeds", 1))
    text += (f" The validation set has only {n_val} videos (one video is {100.0 / max(n_val, 1):.1f} points), so "
             "differences of a few points are noise; " + ("one seed was run." if seeds == 1 else
                                                          f"{seeds} seeds were run per method (means above)."))
    return text


def _plot_curves(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    several = int(results["settings"].get("seeds", 1)) > 1
    for m in results["models"]:
        hist = m["history"]
        epochs = [h["epoch"] for h in hist]
        label = f"{m['method']} s{m.get('seed')}" if several else m["method"]
        (line,) = ax_loss.plot(epochs, [h["train_loss"] for h in hist], marker="o", label=f"{label} train")
        if any(h.get("val_loss") is not None for h in hist):
            ax_loss.plot(epochs, [h.get("val_loss") for h in hist], ls="--", marker="x", color=line.get_color(),
                         label=f"{label} val")
        ax_acc.plot(epochs, [h["train_acc1"] for h in hist], marker="o", color=line.get_color(),
                    label=f"{label} train")
        if any(h.get("val_acc1") is not None for h in hist):
            ax_acc.plot(epochs, [h.get("val_acc1") for h in hist], ls="--", marker="x", color=line.get_color(),
                        label=f"{label} val")
    ax_acc.axhline(results["chance"]["top1"], color="grey", lw=0.8, ls=":", label="chance")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5 if several else 7)
    s = results["settings"]
    fig.suptitle(f"{s['backbone']}, {s['num_segments']} segments, {s['size']}px, seed {s['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _first_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The first run of each method (its confusion matrix is plotted)."""
    first: dict[str, dict[str, Any]] = {}
    for m in results["models"]:
        first.setdefault(m["method"], m)
    return list(first.values())


def write_accuracy_report(results: dict[str, Any], output: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``learning_curves.png`` and ``confusion_<method>.png``.

    Returns:
        ``{"json": ..., "markdown": ..., "curves": ..., "confusion_<method>": ...}``.
    """
    import torch

    from ..eval.confusion import plot_confusion

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"json": output / RESULTS, "markdown": output / REPORT}
    tmp = output / f".{RESULTS}.partial"
    tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, paths["json"])
    s = results["settings"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib font-cache chatter
        if results["models"]:
            paths["curves"] = output / CURVES
            _plot_curves(results, paths["curves"])
        for m in _first_runs(results):
            key = f"confusion_{m['method']}"
            paths[key] = output / f"{key}.png"
            seed = f", seed {m.get('seed')}" if int(s.get("seeds", 1)) > 1 else ""
            plot_confusion(torch.tensor(m["confusion"]), s["classes"], paths[key], f"{m['model']} (synthetic val{seed})")

    several = int(s.get("seeds", 1)) > 1
    lines = ["# Accuracy benchmark: TSN vs TSM vs TDN on synthetic temporal-reasoning videos", ""]
    if results["models"] and several:
        summary = results.get("summary") or summarize_runs(results["models"])
        lines += [
            f"Mean ± sample standard deviation over {s['seeds']} seeds per method (the same dataset; seeds "
            f"{s['seed']} to {s['seed'] + s['seeds'] - 1} for initialisation, sampling and augmentation).",
            "",
            "| method | runs | top-1 | top-5 | reversal pairs top-1 | direction (chance 50) | appearance top-1 "
            "| train time (min) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method, e in summary.items():
            minutes = {k: None if v is None else v / 60 for k, v in (e.get("train_time_s") or {}).items()}
            lines.append(f"| {method} | {e['runs']} | {_pm(e, 'top1')} | {_pm(e, 'top5')} | {_pm(e, 'reversal_top1')} | "
                         f"{_pm(e, 'reversal_direction')} | {_pm(e, 'appearance_top1')} | "
                         f"{_pm({'time': minutes} if minutes else {}, 'time')} |")
        effects = _effects_text(results)
        if effects:
            lines += ["", "What each block adds (difference of means; *beyond the seed spread* when larger than the "
                      "sum of the two standard deviations):", "", *effects]
        lines += ["", "Every run:", ""]
    if results["models"]:
        lines += [
            f"Validation set: {s['val_videos']} videos of {len(s['classes'])} classes; top-1 chance "
            f"{_f(results['chance']['top1'])}%. *Reversal pairs* = top-1 on the videos of the time-reversed "
            "classes; *direction* = how often the true class outscores its time-reversed partner (chance 50%); "
            "*appearance* = top-1 on the appearance-only classes.",
            "",
            "| model | top-1 | top-5 | reversal pairs top-1 | direction (chance 50) | appearance top-1 | params (M) "
            "| GFLOPs/view | train time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for m in results["models"]:
            run = f"{m['model']} (seed {m.get('seed')})" if several else m["model"]
            lines.append(
                f"| {run} | {_f(m['top1'])} | {_f(m['top5'])} | {_f(m['reversal_top1'])} | "
                f"{_f(m['reversal_direction'])} | {_f(m['appearance_top1'])} | {m['params_m']:.2f} | "
                f"{_f(m['gflops_per_view'], 2)} | {m['train_time_s'] / 60:.1f} min |"
            )
        lines += ["", _reading(results), ""]
        lines += ["![learning curves](learning_curves.png)", ""]
        lines += [f"![confusion {m['method']}](confusion_{m['method']}.png)" for m in _first_runs(results)] + [""]
        env = results.get("machine", {})
        ver = results.get("versions", {})
        settings = {
            "classes": ", ".join(s["classes"]),
            "videos": f"{s['videos_per_class']} per class ({s['train_videos']} train, {s['val_videos']} val), "
                      f"{s['frames']} frames of {s['video_size']}x{s['video_size']}, difficulty {s['difficulty']}, "
                      f"{s['codec']}",
            "clip": f"{s['num_segments']} segments (TDN: 5 frames each), crop {s['size']}, eval 1x1 view",
            "training": f"{s['backbone']} from scratch, {s['epochs']} epochs, batch {s['batch_size']}, AdamW lr "
                        f"{s['lr']:g} cosine, weight decay {s['weight_decay']:g}, dropout {s['dropout']:g}, "
                        "flip with left/right and clockwise labels swapped",
            "seed": s["seed"] if not several else f"{s['seed']} to {s['seed'] + s['seeds'] - 1} (dataset: {s['seed']})",
            "machine": f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} CPUs, {env.get('torch_threads', '?')} "
                       f"torch threads, {s.get('device', 'cpu')}",
            "software": ", ".join(f"{k} {v}" for k, v in ver.items()),
            "time": f"generation {results.get('generation_s', 0.0):.0f} s, whole call {results.get('total_s', 0.0) / 60:.1f}"
                    " min wall" + (f", {results['total_cpu_s'] / 60:.1f} min CPU (user + system, all processes)"
                                   if results.get("total_cpu_s") is not None else "")
                    + "; a resumed call only counts what it redid",
        }
        lines += ["| setting | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in settings.items()] + [""]
    real = results.get("real_datasets") or []
    if real:
        lines += [
            "## Real datasets (`tdnzoo eval`)", "",
            "| model | dataset | views | videos | top-1 | top-5 | published top-1 | published top-5 | "
            "difference top-1 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in real:
            diff = r["top1"] - r["published_top1"] if r.get("published_top1") is not None else None
            pv = f" ({r['published_views']})" if r.get("published_views") and r["published_views"] != r["views"] else ""
            lines.append(
                f"| {r['model']} | {r.get('dataset') or ''} | {r['views']} | {r['num_videos']} | {_f(r['top1'])} | "
                f"{_f(r['top5'])} | {_f(r.get('published_top1'))}{pv} | {_f(r.get('published_top5'))} | "
                f"{'' if diff is None else f'{diff:+.1f}'} |"
            )
        sources = sorted({r["published_source"] for r in real if r.get("published_source")})
        if sources:
            lines += ["", "Published numbers: " + "; ".join(sources) + "."]
        lines.append("")
    paths["markdown"].write_text("\n".join(lines), encoding="utf-8")
    return paths


def merge_reports(output: str | os.PathLike, merge_eval: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Rewrite the report in ``output`` from its ``results.json`` (if any) plus ``tdnzoo eval`` reports, training
    nothing; a report merged before is replaced by its new version.

    Raises:
        ValueError: a path that is not a ``tdnzoo eval`` report.
    """
    output = Path(output)
    rows = load_eval_reports(merge_eval)
    existing = output / RESULTS
    results = json.loads(existing.read_text(encoding="utf-8")) if existing.is_file() else {
        "format": "tdnzoo-accuracy-bench", "version": 1, "settings": {}, "models": [], **_environment()}
    known = {r["source_report"] for r in rows}
    results["real_datasets"] = [r for r in results.get("real_datasets", []) if r["source_report"] not in known] + rows
    write_accuracy_report(results, output)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """One line per trained model (accuracies, training minutes) and the total time, for the terminal."""
    lines = [
        f"{m['model']}: top-1 {m['top1']:.1f}  top-5 {m['top5']:.1f}  reversal pairs {_f(m['reversal_top1'])} "
        f"(direction {_f(m['reversal_direction'])})  appearance {_f(m['appearance_top1'])}  "
        f"train {m['train_time_s'] / 60:.1f} min"
        for m in results["models"]
    ]
    cpu = results.get("total_cpu_s")
    lines.append(f"total {results['total_s'] / 60:.1f} min wall" + (f", {cpu / 60:.1f} min CPU" if cpu is not None else ""))
    return "\n".join(lines)
