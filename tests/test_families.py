"""TSN, TSM and TDN on one model of every timm family (as timm's tests/test_models.py over its registry).

Each family's model is built with each method, runs a training step (forward and backward) and an
eval forward at a small input, and the temporal modules must act: reversing the segments changes
the logits of TSM and TDN (weights perturbed so that zero-initialised branches count), not TSN's.
A method may refuse a family only where ``REFUSED`` says so, with its reason in the error.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm

from tdnzoo.bench.survey import ACTS, ROUNDING, check_family, load_family_list
from tdnzoo.models import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: one thread each, two workers in CI

FAMILIES = load_family_list()
# Smaller inputs and fewer blocks than the family's smallest model, where the family takes them, to
# keep this test within a few CPU minutes (all families: about 280 s on one core); checked at full size
# by `tdnzoo backbones table`.
_TINY_VIT = {"depth": 1, "embed_dim": 64, "num_heads": 2}
_SMALL_SWIN = {"img_size": 64, "window_size": 4, "depths": (1, 1, 1, 1)}
TEST_KWARGS: dict[str, dict] = {
    "beit": {"img_size": 64, **_TINY_VIT},
    "byoanet": {"img_size": 64},
    "cait": {"img_size": 64, "depth": 2},
    "coat": {"img_size": 64},
    "convit": {"img_size": 64},
    "deepseek_vit": _TINY_VIT,
    "deit": {"img_size": 64, "depth": 2},
    "efficientformer_v2": {"img_size": 64},
    "eva": {"img_size": 64, "depth": 2},
    "gcvit": {"img_size": 64},
    "gemma4_vit": _TINY_VIT,
    "hiera": {"img_size": (64, 64)},
    "levit": {"img_size": 64},
    "mlp_mixer": {"img_size": 64},
    "mvitv2": {"img_size": 64},
    "naflexvit": _TINY_VIT,
    "nest": {"img_size": 64},
    "pit": {"img_size": 64},
    "qwen3_vit": _TINY_VIT,
    "sequencer": {"img_size": 64},
    "swin_transformer": _SMALL_SWIN,
    "swin_transformer_v2": _SMALL_SWIN,
    "swin_transformer_v2_cr": _SMALL_SWIN,
    "tnt": {"img_size": 64, "depth": 2},
    "swiftformer": {"img_size": 64},
    "twins": {"img_size": 64, "depths": (1, 1, 1, 1)},
    "vgg": {"mlp_ratio": 0.125},  # the 4096-wide 7x7 conv head is 100M of its 130M parameters
    "visformer": {"img_size": 64},
    "vision_transformer_hybrid": {"img_size": 64},
    "vision_transformer_relpos": {"img_size": 64},
    "vision_transformer_sam": {"img_size": 64, "global_attn_indexes": (), **_TINY_VIT},
    "vitamin": {"img_size": 64, "depth": 2},
    "xcit": {"img_size": 64, "depth": 2},
}
# (family, method) -> words of the deliberate refusal's reason.
REFUSED: dict[tuple[str, str], str] = {
    ("crossvit", "tdn"): "half-size difference",
    ("nest", "tsm"): "separate square blocks",
    ("nest", "tdn"): "separate square blocks",
    ("tnt", "tsm"): "two token streams",
    ("tnt", "tdn"): "two token streams",
}
# The reversal thresholds (tdnzoo.bench.survey.ROUNDING and ACTS) are those of the generated table.


def test_the_family_list_covers_every_timm_family():
    listed = {row["family"]: row["model"] for row in FAMILIES}
    assert set(listed) == set(timm.list_modules())
    for family, model in listed.items():
        assert model in timm.list_models(module=family), f"{model} is not a {family} model"


@pytest.mark.parametrize("row", FAMILIES, ids=[row["family"] for row in FAMILIES])
def test_every_family_builds_runs_and_its_temporal_modules_act(row):
    family, model = row["family"], row["model"]
    for method in METHODS:
        check = check_family(family, model, method, backbone_kwargs=TEST_KWARGS.get(family))
        expected = REFUSED.get((family, method))
        if expected is not None:
            assert check.refused and expected in check.error, f"{method} on {model}: expected a refusal, got {check}"
            continue
        assert check.ok, f"{method} on {model} failed: {check.error}"
        if method == "tsn":
            assert check.reversal_change < ROUNDING, f"TSN on {model} depends on the segment order"
        else:
            assert check.temporal_modules > 0
            assert check.reversal_change > ACTS, f"{method} on {model}: its temporal modules do not act"


def test_the_docs_family_table_is_the_rendering_of_its_saved_run(tmp_path):
    # docs/backbones.md holds what `tdnzoo backbones table --from-json docs/backbones_results.json` writes
    from tdnzoo.cli import main

    root = Path(__file__).resolve().parents[1]
    page = tmp_path / "backbones.md"
    page.write_text("intro\n<!-- family-table:start -->\nold\n<!-- family-table:end -->\nrest\n")
    assert main(["backbones", "table", "--from-json", str(root / "docs/backbones_results.json"), "--write", str(page)]) == 0
    rendered = page.read_text().split("<!-- family-table:start -->")[1].split("<!-- family-table:end -->")[0]
    assert "old" not in rendered and "| cnn |" in rendered
    docs = (root / "docs/backbones.md").read_text()
    assert rendered in docs
    assert {row["family"] for row in json.loads((root / "docs/backbones_results.json").read_text())} == {
        row["family"] for row in FAMILIES}
