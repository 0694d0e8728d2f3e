"""The README's model zoo table, generated from ``PRETRAINED_CFGS`` (never typed twice)."""
from __future__ import annotations

from typing import Any

from .pretrained import PRETRAINED_CFGS

__all__ = ["TABLE_END", "TABLE_START", "replace_zoo_section", "zoo_table"]

TABLE_START = "<!-- zoo-table:start -->"
TABLE_END = "<!-- zoo-table:end -->"
_SOURCES = {"tdn": "TDN README", "tsm": "TSM README"}


def _row(name: str, cfg: dict[str, Any]) -> str:
    views = f"{cfg['num_segments']}x{cfg.get('test_clips', 1)}x{cfg.get('test_crops', 1)}"
    top5 = "-" if cfg.get("top5") is None else f"{cfg['top5']:.1f}"
    source = f"[{_SOURCES.get(cfg.get('method'), 'source')}]({cfg.get('metrics_source_url')})"
    if cfg.get("sha256"):
        weights = f"[Hub](https://huggingface.co/{cfg['hf_hub_id']})"
    else:
        weights = f"convert [official]({cfg.get('weights_url') or cfg.get('origin_url')})"
    return (f"| `{name}` | {cfg.get('dataset_name')} | {views} | {cfg['top1']:.1f} | {top5} | "
            f"{cfg['gflops']:.1f} | {cfg['params'] / 1e6:.1f}M | {source} | {weights} |")


def zoo_table(cfgs: dict[str, dict[str, Any]] | None = None) -> str:
    """The markdown model zoo table, with its notes: model, dataset, views, top-1/top-5, GFLOPs
    per view, parameters, source of the numbers and where the weights are."""
    if cfgs is None:
        cfgs = PRETRAINED_CFGS
    lines = [
        "| model | dataset | segments x clips x crops | top-1 | top-5 | GFLOPs/view | params | source | weights |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(name, cfg) for name, cfg in cfgs.items()]
    lines += [
        "",
        "Accuracies (%) are those the official READMEs report for these weights, under each tag's test "
        "protocol (`tdnzoo info NAME.TAG`); tdnzoo reproduces the official outputs but did not re-run the "
        "evaluations. TDN reads 5 consecutive frames per segment. GFLOPs: fvcore (one multiply-add = one flop) "
        "for one view, i.e. one clip at one 224x224 crop (`python -m hub.measure`). \"convert\": the converted "
        "weights are not on the Hugging Face Hub yet; download the official release and run `tdnzoo convert` "
        "(`create_model(NAME.TAG, pretrained=True)` prints the exact command).",
        "",
        "This table is generated from `tdnzoo/models/pretrained.py` by `python -m tdnzoo zoo-table --write README.md`.",
    ]
    return "\n".join(lines)


def replace_zoo_section(text: str, table: str | None = None) -> str:
    """``text`` with the part between the zoo-table markers replaced by ``table`` (default: :func:`zoo_table`)."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no '{TABLE_START}' ... '{TABLE_END}' section found")
    table = zoo_table() if table is None else table
    return text[: start + len(TABLE_START)] + "\n" + table + "\n" + text[end:]
