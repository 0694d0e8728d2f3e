"""Pretrained configs: one metadata record per released weight, named ``arch.tag``.

Every official TDN (MCG-NJU/TDN) and TSM (mit-han-lab/temporal-shift-module) release has a tag.
Reported accuracies are the official READMEs' numbers under the test protocol recorded beside
them; ``gflops`` (fvcore, one multiply-add = one flop, per view: one clip, one crop, 224x224,
all segments) and ``params`` are recomputed from the model by ``tests/test_pretrained.py``
(``python -m hub.measure`` prints them). ``sha256`` stays ``None`` until the converted weights
are published on the Hugging Face Hub; until then ``pretrained=True`` explains how to convert
the official release locally.
"""
from __future__ import annotations

from typing import Any

from ..errors import UnknownModelError
from ..labels import DATASETS, load_label_names

__all__ = [
    "PRETRAINED_CFGS",
    "convert_hint",
    "get_pretrained_cfg",
    "is_published",
    "pretrained_names",
    "register_pretrained_cfg",
    "weights_status",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_ORG = "tdnzoo"  # proposed Hugging Face organisation of the converted weights

_TDN = {
    "license": "apache-2.0",
    "origin_url": "https://github.com/MCG-NJU/TDN#model-zoo",
    "paper_ids": ("arXiv:2012.10071",),
    "metrics_source": "MCG-NJU/TDN README, Model Zoo",
    "metrics_source_url": "https://github.com/MCG-NJU/TDN#model-zoo",
    # The official TDN starts from Cadene's `pretrainedmodels` fbresnet weights (ops/base_module.py),
    # which have no Hugging Face Hub copy, hence no base_model.
    "init": "ImageNet (fbresnet weights of Cadene's pretrainedmodels, as the official code)",
    "base_model": None,
}
_TSM = {
    "license": "mit",
    "origin_url": "https://github.com/mit-han-lab/temporal-shift-module#pretrained-models",
    "paper_ids": ("arXiv:1811.08383",),
    "metrics_source": "mit-han-lab/temporal-shift-module README, Pretrained Models",
    "metrics_source_url": "https://github.com/mit-han-lab/temporal-shift-module#pretrained-models",
    # The official TSM builds torchvision's ResNet with its ImageNet weights (ops/models.py).
    "init": "ImageNet (torchvision weights, as the official code)",
    "base_model": "timm/{backbone}.tv_in1k",
}
_DATASETS = {
    "sthv1": {"dataset_name": "Something-Something V1", "hf_dataset": "something-something-v1", "num_classes": 174},
    "sthv2": {"dataset_name": "Something-Something V2", "hf_dataset": "something-something-v2", "num_classes": 174},
    "kinetics400": {"dataset_name": "Kinetics-400", "hf_dataset": "kinetics-400", "num_classes": 400},
}
_TAG_DATASET = {"sthv1": "sthv1", "sthv2": "sthv2", "k400": "kinetics400"}

# Test protocols of the reported numbers, as the official READMEs state them.
_CENTRE_1x1 = {
    "test_clips": 1, "test_crops": 1, "test_crop_size": 224, "test_sampling": "uniform",
    "test_protocol": "1 clip x 1 centre crop of 224 (short side resized to 256), segment centres",
}
_TDN_K400 = {
    "test_clips": 10, "test_crops": 3, "test_crop_size": 256, "test_sampling": "uniform",
    "test_protocol": "10 clips x 3 crops of 256 (full resolution, short side 256); softmax scores averaged over the 30 views",
}
_TSM_SSV2 = {
    "test_clips": 2, "test_crops": 3, "test_crop_size": 256, "test_sampling": "uniform",
    "test_protocol": "2 clips x 3 crops of 256 (the README's 'full resolution x 2 clips' accurate setting)",
}
_TSM_K400 = {
    "test_clips": 10, "test_crops": 3, "test_crop_size": 256, "test_sampling": "dense",
    "test_protocol": "dense sampling (8 frames at stride 8 in a 64-frame window), 10 clips x 3 crops of 256 (full resolution)",
}


def _cfg(name: str, *, top1: float, top5: float | None, gflops: float, params: int, weights_url: str,
         protocol: dict[str, Any], note: str | None = None) -> tuple[str, dict[str, Any]]:
    arch, tag = name.split(".")
    method, backbone = arch.split("_", 1)
    dataset = _TAG_DATASET[tag.split("_")[0]]
    segments = int(tag.rsplit("_", 1)[1].rstrip("f"))
    common = dict(_TDN if method == "tdn" else _TSM)
    if common["base_model"]:
        common["base_model"] = common["base_model"].format(backbone=backbone)
    cfg: dict[str, Any] = {
        "architecture": arch,
        "tag": tag,
        "method": method,
        "backbone": backbone,
        "dataset": dataset,
        **_DATASETS[dataset],
        "num_segments": segments,
        "frames_per_segment": 5 if method == "tdn" else 1,
        "input_size": (3, 224, 224),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "test_resize": 256,
        **protocol,
        "top1": top1,
        "top5": top5,
        "gflops": gflops,
        "params": params,
        **common,
        "weights_url": weights_url,
        "hf_hub_id": f"{HUB_ORG}/{name}",
        "hf_hub_revision": "main",
        "hf_hub_filename": "model.safetensors",
        "sha256": None,  # set when the converted weights are published (hub/publish.py prints it)
    }
    if note:
        cfg["note"] = note
    return name, cfg


_GD = "https://drive.google.com/"
_HAN = "https://hanlab18.mit.edu/projects/tsm/models/"

# arch.tag -> metadata; the first tag of an architecture is its default.
PRETRAINED_CFGS: dict[str, dict[str, Any]] = dict([
    _cfg("tdn_resnet50.sthv1_8f", top1=52.3, top5=80.6, gflops=35.9, params=24_382_606, protocol=_CENTRE_1x1,
         weights_url=_GD + "drive/folders/12RpThsHQ-3F04fSu8hduM5b7FGnkEfnE?usp=sharing"),
    _cfg("tdn_resnet50.sthv1_16f", top1=53.9, top5=82.1, gflops=71.8, params=24_382_606, protocol=_CENTRE_1x1,
         weights_url=_GD + "drive/folders/1__HhId-WGIkrL7funwt9x8-PvA0jHs_2?usp=sharing"),
    _cfg("tdn_resnet50.sthv2_8f", top1=64.0, top5=88.8, gflops=35.9, params=24_382_606, protocol=_CENTRE_1x1,
         weights_url=_GD + "drive/folders/14pZ1W_Mh8nR4e1ziEz7AFpgbz-79HpIC?usp=sharing"),
    _cfg("tdn_resnet50.sthv2_16f", top1=65.3, top5=89.7, gflops=71.8, params=24_382_606, protocol=_CENTRE_1x1,
         weights_url=_GD + "drive/folders/1AQOyCiRR9I50YIKHYc5E9q29J1ROe22A?usp=sharing"),
    _cfg("tdn_resnet101.sthv2_8f", top1=65.8, top5=90.2, gflops=66.22, params=43_618_174, protocol=_CENTRE_1x1,
         weights_url=_GD + "drive/folders/1N4EojVdHFfNbEU_4WIkT_26d_mSHimmo?usp=sharing"),
    _cfg("tdn_resnet101.sthv2_16f", top1=66.9, top5=90.9, gflops=132.43, params=43_618_174, protocol=_CENTRE_1x1,
         weights_url=_GD + "file/d/1RBzJvE2tGZgnN8Yl4EGj2uFwMECTbIdn/view?usp=sharing"),
    _cfg("tdn_resnet50.k400_8f", top1=76.6, top5=92.8, gflops=35.9, params=24_845_680, protocol=_TDN_K400,
         weights_url=_GD + "drive/folders/1UALrg2ABFq-HGPdy8vgZ9mxqkSkuqWET?usp=sharing"),
    _cfg("tdn_resnet50.k400_16f", top1=77.5, top5=93.2, gflops=71.81, params=24_845_680, protocol=_TDN_K400,
         weights_url=_GD + "drive/folders/1p7NC4JjxaLzwfj1JUa4kkHd_KZBxBBYR?usp=sharing"),
    _cfg("tdn_resnet101.k400_8f", top1=77.5, top5=93.6, gflops=66.22, params=44_081_248, protocol=_TDN_K400,
         weights_url=_GD + "drive/folders/19KPmxPrdp0VS8fsliOr_8kLj1yfhoqRb?usp=sharing"),
    _cfg("tdn_resnet101.k400_16f", top1=78.5, top5=93.9, gflops=132.44, params=44_081_248, protocol=_TDN_K400,
         weights_url=_GD + "drive/folders/1a82RenTMhmtPI66Y21Xyrr00iVKL8GOC?usp=sharing"),
    _cfg("tsm_resnet50.sthv1_8f", top1=45.6, top5=None, gflops=32.88, params=23_864_558, protocol=_CENTRE_1x1,
         weights_url=_HAN + "TSM_something_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth"),
    _cfg("tsm_resnet50.sthv1_16f", top1=47.2, top5=None, gflops=65.76, params=23_864_558, protocol=_CENTRE_1x1,
         weights_url=_HAN + "TSM_something_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth"),
    _cfg("tsm_resnet50.sthv2_8f", top1=61.2, top5=None, gflops=32.88, params=23_864_558, protocol=_TSM_SSV2,
         weights_url=_HAN + "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment8_e45.pth"),
    _cfg("tsm_resnet50.sthv2_16f", top1=63.1, top5=None, gflops=65.76, params=23_864_558, protocol=_TSM_SSV2,
         weights_url=_HAN + "TSM_somethingv2_RGB_resnet50_shift8_blockres_avg_segment16_e45.pth"),
    _cfg("tsm_resnet50.k400_8f", top1=74.1, top5=None, gflops=32.88, params=24_327_632, protocol=_TSM_K400,
         weights_url=_HAN + "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth",
         note="trained and tested with dense sampling (8 frames at stride 8), not TSN segments"),
])


def pretrained_names() -> list[str]:
    """Every registered ``arch.tag``, in registration order (``list_pretrained`` filters and sorts them)."""
    return list(PRETRAINED_CFGS)


def _with_labels(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(cfg)
    if "label_names" not in cfg and cfg.get("dataset"):
        if cfg["dataset"] in DATASETS and DATASETS[cfg["dataset"]] == cfg.get("num_classes"):
            cfg["label_names"] = load_label_names(cfg["dataset"])
    return cfg


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """The metadata of ``arch.tag`` (a copy, with ``label_names``); an architecture alone resolves
    to its default (first) tag.

    Example:
        >>> cfg = get_pretrained_cfg('tdn_resnet50.sthv1_8f')
        >>> cfg['num_classes'], cfg['label_names'][0]
        (174, 'Approaching something with your camera')
    """
    arch, _, tag = name.partition(".")
    if tag:
        full = f"{arch}.{tag}"
        if full not in PRETRAINED_CFGS:
            tags = [n.partition(".")[2] for n in PRETRAINED_CFGS if n.startswith(arch + ".")]
            known = ", ".join(tags) if tags else "none"
            raise UnknownModelError(f"Invalid pretrained tag ({tag}) for {arch}. Known tags: {known}.")
        return _with_labels(PRETRAINED_CFGS[full])
    for key, cfg in PRETRAINED_CFGS.items():
        if key.startswith(arch + "."):
            return _with_labels(cfg)
    raise UnknownModelError(f"No pretrained weights for {arch}. `tdnzoo list --pretrained` lists them.")


def register_pretrained_cfg(name: str, cfg: dict[str, Any], *, overwrite: bool = False) -> None:
    """Add a pretrained config ``arch.tag`` (e.g. weights of your own on the Hub).

    Args:
        name: ``arch.tag``.
        cfg: metadata; needs at least ``num_classes`` and ``hf_hub_id``.
        overwrite: replace an existing tag.
    """
    arch, _, tag = name.partition(".")
    if not tag:
        raise ValueError(f"a pretrained config needs an 'arch.tag' name, got '{name}'")
    if name in PRETRAINED_CFGS and not overwrite:
        raise ValueError(f"pretrained tag '{name}' exists; pass overwrite=True to replace it")
    missing = [k for k in ("num_classes", "hf_hub_id") if not cfg.get(k)]
    if missing:
        raise ValueError(f"pretrained config '{name}' lacks {', '.join(missing)}")
    PRETRAINED_CFGS[name] = {"architecture": arch, "tag": tag, **cfg}


def is_published(cfg: dict[str, Any]) -> bool:
    """Whether the weights are on the Hub with a known hash (``sha256`` set)."""
    return bool(cfg.get("sha256"))


def convert_hint(cfg: dict[str, Any]) -> str:
    """How to convert the official release of a tag locally and load it."""
    arch, tag = cfg.get("architecture", "?"), cfg.get("tag", "?")
    name = f"{arch}.{tag}"
    url = str(cfg.get("weights_url") or "")
    src = url.rsplit("/", 1)[-1] if url.endswith((".pth", ".tar")) else "CHECKPOINT"
    return (
        f"Convert the official release locally: download it from {cfg.get('weights_url') or cfg.get('origin_url')}, "
        f"run `tdnzoo convert {src} {name}.safetensors --model {arch} --num-segments {cfg.get('num_segments')} "
        f"--num-classes {cfg.get('num_classes')}`, then load it with "
        f"`tdnzoo.create_model('{name}', checkpoint_path='{name}.safetensors')`."
    )


def weights_status(cfg: dict[str, Any]) -> str:
    """One line on where the weights are: on the Hub (with hash) or to convert locally."""
    if is_published(cfg):
        return f"on the Hugging Face Hub: {cfg['hf_hub_id']}@{cfg.get('hf_hub_revision') or 'main'} (sha256 {cfg['sha256']})"
    return "not on the Hugging Face Hub yet (sha256 unknown); " + convert_hint(cfg)
