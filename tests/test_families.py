"""TSN, TSM and TDN on one model of every timm family (as timm's tests/test_models.py over its registry).

Each family's model is built with each method, runs a training step (forward and backward) and an
eval forward at a small input, and the temporal modules must act: reversing the segments changes
the logits of TSM and TDN (weights perturbed so that zero-initialised branches count), not TSN's.
A method may refuse a family only where ``REFUSED`` says so, with its reason in the error.
"""
from __future__ import annotations

import pytest
import timm

from tdnzoo.models.survey import check_family, load_family_list

FAMILIES = load_family_list()
# The suite runs on a 2-core CI machine in minutes. For now it takes the families timed within that
# budget in a clean run (whose smallest model has at most 6M parameters and ran in this order first);
# the other families need smaller per-family configs before they fit. `tdnzoo backbones table` runs all.
IN_SUITE = {"byobnet", "xcit", "coat", "convit", "convnext", "cspnet", "cspnext", "deit", "dla", "edgenext",
            "efficientformer_v2", "efficientnet", "efficientvit_mit", "efficientvit_msra"}
TESTED = [row for row in FAMILIES if row["family"] in IN_SUITE]
# Smaller inputs and fewer blocks than the family's smallest model, where the family takes them, to
# keep this test within a few CPU minutes; checked at full size by `tdnzoo backbones table`.
TEST_KWARGS: dict[str, dict] = {}
# (family, method) -> words of the deliberate refusal's reason.
REFUSED: dict[tuple[str, str], str] = {
    ("crossvit", "tdn"): "half-size difference",
    ("nest", "tsm"): "separate square blocks",
    ("nest", "tdn"): "separate square blocks",
    ("tnt", "tsm"): "two token streams",
    ("tnt", "tdn"): "two token streams",
}
# A change of the logits below this, relative to the largest, is rounding.
ROUNDING = 1e-5


def test_the_family_list_covers_every_timm_family():
    listed = {row["family"]: row["model"] for row in FAMILIES}
    assert set(listed) == set(timm.list_modules())
    for family, model in listed.items():
        assert model in timm.list_models(module=family), f"{model} is not a {family} model"


@pytest.mark.parametrize("row", TESTED, ids=[row["family"] for row in TESTED])
def test_every_family_builds_runs_and_its_temporal_modules_act(row):
    family, model = row["family"], row["model"]
    for method in ("tsn", "tsm", "tdn"):
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
            assert check.reversal_change > 100 * ROUNDING, f"{method} on {model}: its temporal modules do not act"
