"""Model cards generated from a pretrained cfg: front matter from data (``ModelCardData`` +
``EvalResult``), body from a Jinja template filled with sections written here."""
from __future__ import annotations

import os
from importlib import resources
from typing import Any

from ..data.transforms import resolve_eval_sizes

__all__ = ["CITATIONS", "card_sections", "model_card_data", "render_model_card"]

CITATIONS = {
    "tdn": """@inproceedings{wang2021tdn,
  title={TDN: Temporal Difference Networks for Efficient Action Recognition},
  author={Wang, Limin and Tong, Zhan and Ji, Bin and Wu, Gangshan},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2021}
}""",
    "tsm": """@inproceedings{lin2019tsm,
  title={TSM: Temporal Shift Module for Efficient Video Understanding},
  author={Lin, Ji and Gan, Chuang and Han, Song},
  booktitle={Proceedings of the IEEE International Conference on Computer Vision (ICCV)},
  year={2019}
}""",
    "tsn": """@inproceedings{wang2016tsn,
  title={Temporal Segment Networks: Towards Good Practices for Deep Action Recognition},
  author={Wang, Limin and Xiong, Yuanjun and Wang, Zhe and Qiao, Yu and Lin, Dahua and Tang, Xiaoou and Van Gool, Luc},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2016}
}""",
}
_METHODS = {
    "tdn": "TDN (Temporal Difference Network, Wang et al., CVPR 2021): a 2D CNN with a short-term difference "
           "stream over 5 consecutive frames per segment (S-TDM) and long-term feature differences between "
           "segments (L-TDM)",
    "tsm": "TSM (Temporal Shift Module, Lin et al., ICCV 2019): a 2D CNN whose residual blocks shift 1/8 of "
           "the channels one segment forward and 1/8 one segment back",
    "tsn": "TSN (Temporal Segment Network, Wang et al., ECCV 2016): a 2D CNN applied to each segment",
}


_SHOWN_NAMES = 50  # class names listed in a card (Kinetics has 400)


def _name(cfg: dict[str, Any]) -> str:
    arch = cfg.get("architecture") or "model"
    return f"{arch}.{cfg['tag']}" if cfg.get("tag") else arch


def _views(cfg: dict[str, Any]) -> str:
    return f"{cfg.get('num_segments')}x{cfg.get('test_clips', 1)}x{cfg.get('test_crops', 1)}"


def model_card_data(cfg: dict[str, Any]) -> Any:
    """The card's front matter: library, pipeline, license, datasets, base model, tags, model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    for key, metric_type, metric_name in (("top1", "accuracy", "Top-1 accuracy"),
                                          ("top5", "top_5_accuracy", "Top-5 accuracy")):
        if cfg.get(key) is None or not cfg.get("dataset_name"):
            continue
        results.append(EvalResult(
            task_type="video-classification",
            task_name="Video Classification",
            dataset_type=cfg.get("hf_dataset") or cfg["dataset_name"],
            dataset_name=cfg["dataset_name"],
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=float(cfg[key]),
            metric_config=f"{_views(cfg)} (segments x clips x crops)",
            source_name=cfg.get("metrics_source"),
            source_url=cfg.get("metrics_source_url"),
        ))
    tags = ["video-classification", "action-recognition", "tdnzoo", "timm"]
    tags += [t for t in (cfg.get("method"), cfg.get("backbone"), cfg.get("dataset")) if t]
    return ModelCardData(
        library_name="tdnzoo",
        pipeline_tag="video-classification",
        license=cfg.get("license"),
        datasets=[cfg["hf_dataset"]] if cfg.get("hf_dataset") else None,
        base_model=cfg.get("base_model"),
        tags=list(dict.fromkeys(tags)),
        metrics=["accuracy"] if results else None,
        model_name=_name(cfg),
        eval_results=results or None,
    )


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def card_sections(cfg: dict[str, Any], *, repo_id: str | None = None) -> dict[str, str]:
    """The markdown sections of a card (template variables), written from the cfg."""
    name = _name(cfg)
    method = str(cfg.get("method") or "")
    repo_id = repo_id or cfg.get("hf_hub_id")
    segments, fps = cfg.get("num_segments"), cfg.get("frames_per_segment", 1)
    size = (cfg.get("input_size") or (3, 224, 224))[-1]
    classes = cfg.get("num_classes")
    dataset = cfg.get("dataset_name")

    blocks = ", ".join(cfg.get("temporal_blocks") or ()) or "none"
    described = _METHODS.get(method) or f"a tdnzoo composition of temporal blocks (`{method}`: {blocks})"
    summary = f"**{name}** is {described}, on a timm `{cfg.get('backbone')}` backbone"
    summary += f", trained on {dataset} ({classes} classes)." if dataset else f" ({classes} classes)."
    if cfg.get("finetuned_from"):
        summary += f" Its backbone comes from `{cfg['finetuned_from']}`; the classifier was re-initialised."
    elif cfg.get("weights_url"):
        summary += (f" The weights are the official release ({cfg['weights_url']}), converted to tdnzoo's layout; "
                    "tdnzoo reproduces the official code's outputs.")

    load = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH"
    usage = f"""```python
import torch, tdnzoo

model = tdnzoo.create_model("{load}", pretrained=True).eval()
clip = torch.randn(1, model.num_frames, 3, {size}, {size})  # [B, T, 3, H, W], ImageNet-normalised
with torch.no_grad():
    probs = model(clip).softmax(-1)
labels = model.pretrained_cfg.get("label_names")
```"""
    if cfg.get("tag") and cfg.get("architecture"):
        usage += f"\n\nor by its tdnzoo name: `tdnzoo.create_model(\"{name}\", pretrained=True)`."
    usage += ("\n\nWith `num_classes=N` the backbone is kept and a fresh N-class head replaces the "
              "trained one, for fine-tuning.")

    input_format = (
        f"A float tensor `[B, T, 3, H, W]` with `T = {segments} segments x {fps} frame(s) per segment = "
        f"{(segments or 0) * (fps or 1)}`, segment-major, RGB, scaled to [0, 1] and normalised with mean "
        f"`{tuple(cfg.get('mean') or ())}` and std `{tuple(cfg.get('std') or ())}`. Frames: short side resized to "
        f"{cfg.get('test_resize') or resolve_eval_sizes(cfg)[1]} ({cfg.get('interpolation', 'bilinear')}), then cropped to {size}x{size}."
    )
    if (fps or 1) > 1:  # S-TDM (TDN's, or a composition's)
        input_format += f" Each segment brings {fps} consecutive frames; the RGB stream sees the centre one."
    if cfg.get("note"):
        input_format += f" Note: {cfg['note']}."
    input_format += (" The output is `[B, num_classes]` logits, the mean over segments of per-segment logits."
                     f" `model.pretrained_cfg['label_names']` holds the {classes} class names"
                     " in index order." if cfg.get("label_names") else "")
    names = list(cfg.get("label_names") or ())
    if names:
        shown = ", ".join(f"`{n}`" for n in names[:_SHOWN_NAMES])
        more = f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
        input_format += f"\n\nClasses ({len(names)}, in index order): {shown}{more}."
    if cfg.get("test_clips") or cfg.get("test_crops"):
        input_format += (f"\n\nTest views: {cfg.get('test_clips', 1)} clip(s) x {cfg.get('test_crops', 1)} crop(s) "
                         f"of {segments} segments at {size}x{size}.")

    if cfg.get("top1") is not None:
        evaluation = (
            f"| dataset | segments x clips x crops | top-1 | top-5 | source |\n| --- | --- | --- | --- | --- |\n"
            f"| {dataset} val | {_views(cfg)} | {_fmt(cfg.get('top1'))} | {_fmt(cfg.get('top5'))} | "
            f"[{cfg.get('metrics_source')}]({cfg.get('metrics_source_url')}) |\n\n"
            f"Protocol: {cfg.get('test_protocol', '-')}. These are the numbers the original authors report for "
            "these weights; tdnzoo did not re-evaluate them."
        )
    else:
        evaluation = "No evaluation results recorded for these weights."

    cost = []
    if cfg.get("gflops"):
        cost.append(f"{cfg['gflops']:.2f} GFLOPs per view (fvcore, one multiply-add = one flop; one clip of "
                    f"{segments} segments at {size}x{size})")
    if cfg.get("params"):
        cost.append(f"{cfg['params'] / 1e6:.2f}M parameters")
    origin = []
    if cfg.get("license"):
        origin.append(f"License: `{cfg['license']}`, as the original release.")
    if cfg.get("origin_url"):
        origin.append(f"Original weights: {cfg['origin_url']}.")
    if cfg.get("init"):
        origin.append(f"Backbone initialisation: {cfg['init']}.")
    if cfg.get("paper_ids"):
        origin.append("Paper: " + ", ".join(cfg["paper_ids"]) + ".")
    citation = "```bibtex\n" + "\n\n".join(CITATIONS[m] for m in dict.fromkeys((method, "tsn")) if m in CITATIONS) + "\n```"
    return {
        "model_id": name,
        "repo_id": repo_id or "",
        "summary": summary,
        "usage": usage,
        "input_format": input_format,
        "evaluation": evaluation,
        "cost": "; ".join(cost) + "." if cost else "",
        "origin": " ".join(origin),
        "citation": citation,
        "sha256": cfg.get("sha256") or "",
    }


def render_model_card(cfg: dict[str, Any], *, template_path: str | os.PathLike | None = None,
                      repo_id: str | None = None, **context: Any) -> Any:
    """A ``huggingface_hub.ModelCard`` for the weights ``cfg`` describes.

    Args:
        cfg: a pretrained cfg (tag metadata, or an export's ``pretrained_cfg``).
        template_path: Jinja template; default tdnzoo's generic card. Variables: ``card_data``
            and the keys of :func:`card_sections`, plus ``context``.
        repo_id: the Hub repository (for the usage snippet); default ``cfg['hf_hub_id']``.
        **context: more template variables.
    """
    from huggingface_hub import ModelCard

    sections = {**card_sections(cfg, repo_id=repo_id), **context}
    if template_path is None:
        template = resources.files(__package__).joinpath("templates", "model_card.md").read_text(encoding="utf-8")
    else:
        with open(template_path, encoding="utf-8") as f:
            template = f.read()
    return ModelCard.from_template(model_card_data(cfg), template_str=template, **sections)
