"""The report of an evaluation: ``report.json``, ``report.md`` (published numbers beside the measured ones)
and ``confusion.png``."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .confusion import plot_confusion
from .scores import EvalResult

__all__ = ["published_numbers", "write_report"]


def published_numbers(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Published accuracy in a pretrained cfg, read defensively.

    Looks at ``cfg['reported']`` (a dict with ``top1``, ``top5``, ``views``/``test_views``,
    ``source``), then at flat keys ``reported_top1``, ``reported_top5``, ``test_views``,
    ``reported_source`` / ``origin_url``. Returns only what it found.
    """
    cfg = cfg or {}
    reported = cfg.get("reported") if isinstance(cfg.get("reported"), dict) else {}
    out: dict[str, Any] = {}
    for key in ("top1", "top5"):
        value = reported.get(key, cfg.get(f"reported_{key}"))
        if value is not None:
            out[key] = float(value)
    if not out:
        return {}
    views = reported.get("views") or reported.get("test_views") or cfg.get("test_views")
    if isinstance(views, (list, tuple)):
        views = "x".join(str(v) for v in views)
    if views:
        out["views"] = str(views)
    source = reported.get("source") or cfg.get("reported_source") or cfg.get("origin_url")
    if source:
        out["source"] = str(source)
    dataset = reported.get("dataset") or cfg.get("dataset")
    if dataset:
        out["dataset"] = str(dataset)
    return out


def write_report(
    result: EvalResult,
    output: str | os.PathLike,
    *,
    model_name: str,
    pretrained_cfg: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``confusion.png`` into ``output``.

    The markdown table puts the published top-1/top-5 (from :func:`published_numbers`) beside the
    measured ones, with the difference, and says when the views differ from the published protocol.

    Returns:
        ``{'json': path, 'markdown': path, 'confusion': path}``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    published = published_numbers(pretrained_cfg)
    views = f"{result.views[0]}x{result.views[1]}"
    report = {"model": model_name, **(details or {}), **result.to_dict(), "published": published or None}
    if published:
        report["delta"] = {k: report[k] - published[k] for k in ("top1", "top5") if k in published}
    paths = {"json": output / "report.json", "markdown": output / "report.md", "confusion": output / "confusion.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    lines = [
        f"# Evaluation of `{model_name}`",
        "",
        f"{result.num_videos} videos, {result.num_classes} classes, {views} views (clips x crops), softmax "
        "averaged over views.",
        "",
        "| | top-1 | top-5 | mean class acc. | views |",
        "| --- | --- | --- | --- | --- |",
        f"| measured | {fmt(result.top1)} | {fmt(result.top5)} | {fmt(result.mean_class_accuracy)} | {views} |",
    ]
    if published:
        lines.append(
            f"| published | {fmt(published.get('top1'))} | {fmt(published.get('top5'))} | | {published.get('views', '')} |"
        )
        delta = report["delta"]
        lines.append(f"| difference | {fmt(delta.get('top1'))} | {fmt(delta.get('top5'))} | | |")
        notes = []
        if published.get("views") and published["views"].lower() != views:
            notes.append(f"the published numbers use {published['views']} views, this run {views}")
        if published.get("source"):
            notes.append(f"source: {published['source']}")
        if notes:
            lines += ["", "Note: " + "; ".join(notes) + "."]
    else:
        lines += ["", "No published numbers for this model (its pretrained cfg has none)."]
    if details:
        lines += ["", "| setting | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in details.items()]
    if result.skipped:
        lines += ["", f"{len(result.skipped)} unreadable video(s) were replaced by others: {', '.join(result.skipped[:10])}"]
    lines += ["", "![confusion matrix](confusion.png)", ""]
    paths["markdown"].write_text("\n".join(lines), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib font-cache chatter
        plot_confusion(result.confusion, result.class_names, paths["confusion"], f"{model_name} ({views})")
    return paths
