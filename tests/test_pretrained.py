"""Pretrained configs: every official release has a complete tag whose numbers match their sources
and whose GFLOPs and parameters are recomputed from the model; label names; the zoo table."""
from __future__ import annotations

import logging
import re
import shutil
from functools import cache

import pytest
import torch
from huggingface_hub import constants

import tdnzoo
from tdnzoo.cli import main as cli_main
from tdnzoo.errors import UnknownModelError
from tdnzoo.hub import HubFileNotFoundError
from tdnzoo.labels import load_label_names
from tdnzoo.models.pretrained import PRETRAINED_CFGS, get_pretrained_cfg, register_pretrained_cfg, weights_status
from tdnzoo.models.registry import list_pretrained
from tdnzoo.models.zoo_table import TABLE_END, TABLE_START, zoo_table

from .conftest import FIXTURES, ROOT

OFFICIAL = {
    "tdn_resnet50.sthv1_8f", "tdn_resnet50.sthv1_16f", "tdn_resnet50.sthv2_8f", "tdn_resnet50.sthv2_16f",
    "tdn_resnet101.sthv2_8f", "tdn_resnet101.sthv2_16f", "tdn_resnet50.k400_8f", "tdn_resnet50.k400_16f",
    "tdn_resnet101.k400_8f", "tdn_resnet101.k400_16f", "tsm_resnet50.sthv1_8f", "tsm_resnet50.sthv1_16f",
    "tsm_resnet50.sthv2_8f", "tsm_resnet50.sthv2_16f", "tsm_resnet50.k400_8f",
}
REQUIRED = (
    "architecture", "tag", "method", "backbone", "dataset", "dataset_name", "num_classes", "num_segments",
    "frames_per_segment", "input_size", "mean", "std", "interpolation", "crop_pct", "test_resize", "test_clips",
    "test_crops", "test_crop_size", "test_protocol", "top1", "metrics_source", "metrics_source_url", "gflops",
    "params", "license", "origin_url", "weights_url", "paper_ids", "hf_hub_id", "hf_hub_revision",
)
DATASET_KEYS = {"SSv1": "sthv1", "SSv2": "sthv2", "K400": "k400"}
MODEL_KEYS = {"TDN-R50": "tdn_resnet50", "TDN-R101": "tdn_resnet101", "TSM-R50": "tsm_resnet50"}


def test_every_official_release_has_a_tag():
    assert set(list_pretrained()) == OFFICIAL
    assert set(list_pretrained("tsm_*")) == {n for n in OFFICIAL if n.startswith("tsm_")}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_metadata_is_complete(name):
    cfg = get_pretrained_cfg(name)
    assert [k for k in REQUIRED if cfg.get(k) in (None, "")] == []
    assert cfg["architecture"] + "." + cfg["tag"] == name
    assert (cfg["top5"] is None) == (cfg["method"] == "tsm")  # the TSM README gives no top-5
    assert cfg["frames_per_segment"] == (5 if cfg["method"] == "tdn" else 1)
    assert f"_{cfg['num_segments']}f" in cfg["tag"] and cfg["input_size"] == (3, 224, 224)
    assert cfg["license"] == {"tdn": "apache-2.0", "tsm": "mit"}[cfg["method"]]
    assert all(cfg[k].startswith("https://") for k in ("origin_url", "weights_url", "metrics_source_url"))
    assert cfg["hf_hub_id"] == f"tdnzoo/{name}" and cfg["hf_hub_revision"] == "main"
    # Not published yet: no hash, and the status says how to get the weights instead.
    assert cfg["sha256"] is None
    assert "tdnzoo convert" in weights_status(cfg)
    labels = cfg["label_names"]
    assert len(labels) == cfg["num_classes"] and labels == load_label_names(cfg["dataset"])


def _published_rows():
    """(tag, top-1, top-5) from the official READMEs' numbers in tests/fixtures/published.tsv."""
    lines = [line for line in (FIXTURES / "published.tsv").read_text().splitlines() if not line.startswith("#")]
    header = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=True))
        name = f"{MODEL_KEYS[row['model']]}.{DATASET_KEYS[row['data']]}_{row['segments']}f"
        yield name, float(row["top1"]), float(row["top5"]) if row["top5"] else None


def test_reported_numbers_match_the_published_table():
    rows = list(_published_rows())
    assert len(rows) == len(OFFICIAL)  # one row per release, none twice
    assert {name for name, _, _ in rows} == OFFICIAL
    for name, top1, top5 in rows:
        cfg = PRETRAINED_CFGS[name]
        assert (cfg["top1"], cfg["top5"]) == (top1, top5), name


def test_label_names_in_the_official_order():
    for dataset in ("kinetics400", "sthv1", "sthv2"):
        names = load_label_names(dataset)
        assert names == tuple((FIXTURES / "labels" / f"{dataset}.txt").read_text().splitlines())
        assert len(set(names)) == len(names)
    sthv1 = load_label_names("sthv1")
    for a, b in ((86, 87), (93, 94), (166, 167)):  # the official flip map swaps these left/right pairs
        assert sthv1[a].replace("left", "right") == sthv1[b].replace("left", "right") and sthv1[a] != sthv1[b]
    with pytest.raises(ValueError, match="kinetics400"):
        load_label_names("kinetics700")


# --- GFLOPs and parameters, recomputed -----------------------------------------------------
# fvcore counts every op per frame, so flops are linear in the segments; classes only change the
# classifier (head_hidden_size MACs per class and frame; head_hidden_size + 1 parameters per class).
# test_cost_laws proves both laws with fvcore, so one model per architecture checks every tag.
BASE_SEGMENTS, BASE_CLASSES = 2, 174


def _fvcore(model, size):
    from hub.measure import count_flops

    return count_flops(model, size)


@cache
def _base_cost(arch):
    model = tdnzoo.create_model(arch, num_classes=BASE_CLASSES, num_segments=BASE_SEGMENTS)
    return _fvcore(model, 224), sum(p.numel() for p in model.parameters()), model.head_hidden_size


def test_cost_laws():
    def cost(name, segments, classes):
        model = tdnzoo.create_model(name, num_classes=classes, num_segments=segments)
        return _fvcore(model, 64), sum(p.numel() for p in model.parameters()), model.head_hidden_size

    base = {name: cost(name, 2, 5) for name in ("tdn_test_resnet", "tsm_test_resnet")}
    for name, (f2, p2, _) in base.items():
        f4, p4, _ = cost(name, 4, 5)
        assert f4 == 2 * f2 and p4 == p2
    # The classes only touch the classifier and the segment consensus, whatever the method: one method
    # shows it. 4 more classes: a multiply-add per feature on each of 2 segments, and the consensus mean
    # adds the 2 segments' 4 new logits (counted per input element, as fvcore counts pooling).
    f2, p2, features = base["tsm_test_resnet"]
    f2c, p2c, _ = cost("tsm_test_resnet", 2, 9)
    assert f2c - f2 == 2 * features * 4 + 2 * 4 and p2c - p2 == 4 * (features + 1)


@pytest.mark.parametrize("arch", [
    "tdn_resnet50",
    pytest.param("tdn_resnet101", marks=pytest.mark.heavy),
    pytest.param("tsm_resnet50", marks=pytest.mark.heavy),
])
def test_gflops_and_params_are_recomputed_from_the_model(arch):
    flops, params, features = _base_cost(arch)
    tags = [n for n in OFFICIAL if n.startswith(arch + ".")]
    assert tags
    for name in tags:
        cfg = PRETRAINED_CFGS[name]
        extra = cfg["num_classes"] - BASE_CLASSES
        segments = cfg["num_segments"]
        expected = flops * segments // BASE_SEGMENTS + segments * features * extra
        assert round(expected / 1e9, 2) == cfg["gflops"], name
        assert params + extra * (features + 1) == cfg["params"], name
    if arch == "tdn_resnet50":  # docs/design.md §2: 24.4M parameters and 35.9 GFLOPs at 8x224x224, 174 classes
        assert round(PRETRAINED_CFGS["tdn_resnet50.sthv1_8f"]["gflops"], 1) == 35.9
        assert round(PRETRAINED_CFGS["tdn_resnet50.sthv1_8f"]["params"] / 1e6, 1) == 24.4


# --- names, errors, metadata on models ------------------------------------------------------
def test_get_pretrained_cfg_names_and_errors():
    assert get_pretrained_cfg("tdn_resnet50")["tag"] == "sthv1_8f"  # first tag is the default
    with pytest.raises(UnknownModelError, match="Known tags: .*sthv1_8f"):
        get_pretrained_cfg("tdn_resnet50.sthv3_8f")
    with pytest.raises(UnknownModelError, match="tdnzoo list --pretrained"):
        get_pretrained_cfg("tdn_convnext_tiny")
    with pytest.raises(ValueError, match="hf_hub_id"):
        register_pretrained_cfg("tdn_resnet18.mine", {"num_classes": 3})
    with pytest.raises(ValueError, match="exists"):
        register_pretrained_cfg("tdn_resnet50.sthv1_8f", {"num_classes": 3, "hf_hub_id": "a/b"})


def test_tag_metadata_follows_the_model_built(caplog):
    model = tdnzoo.create_model("tsm_resnet50.k400_8f")
    cfg = model.pretrained_cfg
    assert cfg["top1"] == 74.1 and cfg["test_sampling"] == "dense" and len(cfg["label_names"]) == 400
    other = tdnzoo.create_model("tsm_resnet50.k400_8f", num_classes=10, num_segments=4)
    assert other.pretrained_cfg["num_classes"] == 10 and other.pretrained_cfg["num_segments"] == 4
    assert "label_names" not in other.pretrained_cfg  # 400 names do not describe a 10-class head


def test_unpublished_tag_says_how_to_convert_and_the_advice_works(synth, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    name = "tsm_resnet50.sthv1_8f"
    with pytest.raises(HubFileNotFoundError, match="not on the Hugging Face Hub yet") as err:
        tdnzoo.create_model(name, pretrained=True)
    message = str(err.value)
    assert PRETRAINED_CFGS[name]["weights_url"] in message and "--num-segments 8" in message
    command = re.search(r"`tdnzoo convert ([^`]+)`", message).group(1).split()
    load = re.search(r"create_model\('([^']+)', checkpoint_path='([^']+)'\)", message)
    monkeypatch.chdir(tmp_path)
    torch.save(synth.official_checkpoint("tsm_resnet50", seed=2, num_classes=174), tmp_path / command[0])
    assert cli_main(["convert", *command]) == 0
    model = tdnzoo.create_model(load.group(1), checkpoint_path=load.group(2))
    assert model.num_classes == 174 and model.num_segments == 8 and model.pretrained_cfg["top1"] == 45.6
    assert model.pretrained_cfg["label_names"][0] == "Approaching something with your camera"


def test_info_prints_a_tags_metadata_without_weights(capsys):
    assert cli_main(["info", "tsm_resnet50.k400_8f"]) == 0
    out = capsys.readouterr().out
    for text in ("74.1", "Kinetics-400", "10", "dense", "400 names: 'abseiling'", "not on the Hugging Face Hub yet",
                 "tsm_resnet50.k400_8f.safetensors", "mit"):
        assert text in out, text


# --- zoo table ------------------------------------------------------------------------------
def test_readme_zoo_table_is_up_to_date():
    text = (ROOT / "README.md").read_text()
    section = text[text.index(TABLE_START) + len(TABLE_START): text.index(TABLE_END)]
    assert section.strip() == zoo_table().strip(), "run `python -m tdnzoo zoo-table --write README.md`"
    assert all(f"`{name}`" in section for name in OFFICIAL)


def test_zoo_table_command_detects_and_fixes_a_stale_section(tmp_path, monkeypatch, caplog):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    assert cli_main(["zoo-table", "--check", str(readme)]) == 0
    monkeypatch.setitem(PRETRAINED_CFGS, "tdn_resnet50.sthv1_8f", {**PRETRAINED_CFGS["tdn_resnet50.sthv1_8f"], "top1": 99.9})
    with caplog.at_level(logging.WARNING):
        assert cli_main(["zoo-table", "--check", str(readme)]) == 1
    assert cli_main(["zoo-table", "--write", str(readme)]) == 0
    assert cli_main(["zoo-table", "--check", str(readme)]) == 0
    assert "| 99.9 |" in readme.read_text()
    readme.write_text("no markers here")
    assert cli_main(["zoo-table", "--check", str(readme)]) == 2
