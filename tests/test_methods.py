"""The method table: the presets are compositions of its blocks, every composition of the four blocks builds,
trains and runs on every family, compositions are named and reload as themselves, and a method registered in a
test file (its own temporal layer) works by name on three families, in the family survey and the FLOPs count."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import tdnzoo
from tdnzoo.bench.flops import count_flops
from tdnzoo.bench.speed import SpeedConfig, run_speed_benchmark
from tdnzoo.bench.survey import check_family
from tdnzoo.layers import LongTermTDM, ShortTermTDM, TemporalConv, TemporalShift
from tdnzoo.models.insertion import TemporalInsert
from tdnzoo.models.methods import (
    BLOCK_TABLE,
    METHOD_TABLE,
    POSITION_MIXING,
    BuildOptions,
    MethodPreset,
    TemporalBlock,
    composition_name,
    parse_method,
    unregister_method,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
SEGMENTS = 2
# One small model per family (timm's test_* models where timm has one), at 64 px.
FAMILIES: dict[str, tuple[str, dict]] = {
    "resnet": ("test_resnet", {}),
    "convnext": ("test_convnext", {}),
    "efficientnet": ("test_efficientnet", {}),
    "vit": ("test_vit", {"img_size": SIZE}),
    "swin": ("swin_tiny_patch4_window7_224",
             {"img_size": SIZE, "window_size": 4, "depths": (1, 1, 1, 1), "embed_dim": 24, "num_heads": (1, 1, 1, 1)}),
}
BLOCKS = ("shift", "short_term", "long_term", "temporal_conv")
LAYERS = {"shift": TemporalShift, "short_term": ShortTermTDM, "long_term": LongTermTDM, "temporal_conv": TemporalConv}
COMBINATIONS = [dict(zip(BLOCKS, on)) for on in itertools.product((False, True), repeat=len(BLOCKS))]


def _model(method: str, family: str, **kwargs) -> tdnzoo.VideoClassifier:
    backbone, backbone_kwargs = FAMILIES[family]
    torch.manual_seed(0)
    return tdnzoo.create_model(f"{method}_{backbone}", num_segments=SEGMENTS, num_classes=5, drop_rate=0.0,
                               backbone_kwargs=backbone_kwargs, **kwargs)


def _clip(model, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, model.num_frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_every_composition_builds_trains_a_step_and_runs(family):
    for blocks in COMBINATIONS:
        model = _model("tsn", family, **blocks)
        name = composition_name("tsn", {**{k: False for k in BLOCK_TABLE}, **blocks})
        assert model.method == name and model.pretrained_cfg["architecture"].startswith(f"{name}_"), blocks
        for keyword, layer in LAYERS.items():
            assert (_count(model, layer) > 0) == blocks[keyword], (family, blocks, keyword)
        assert model.num_frames == SEGMENTS * (5 if blocks["short_term"] else 1)  # frames follow S-TDM
        # One training step: every temporal module gets a gradient, and the step changes the output.
        x = _clip(model)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 3]))
        loss.backward()
        temporal = [p for m in model.modules() if isinstance(m, (LongTermTDM, TemporalConv, ShortTermTDM))
                    for p in m.parameters()]
        assert all(p.grad is not None for p in temporal), (family, blocks)
        optimizer.step()
        model.eval()
        with torch.no_grad():
            after = model(x)
        assert after.shape == (2, 5) and torch.isfinite(after).all(), (family, blocks)


@pytest.mark.parametrize("preset", ["tsm", "tdn"])
def test_a_preset_is_tsn_with_its_blocks_switched_on(preset):
    keywords = dict.fromkeys(METHOD_TABLE[preset].keywords(), True)
    built = _model(preset, "resnet").eval()
    composed = _model("tsn", "resnet", **keywords).eval()
    assert composed.method == f"tsn+{'+'.join(s for s in ('shift', 'stdm', 'ltdm', 'tconv') if s in composed.method)}"
    assert built.state_dict().keys() == composed.state_dict().keys()
    composed.load_state_dict(built.state_dict())
    x = _clip(built)
    with torch.no_grad():
        assert torch.equal(built(x), composed(x))


def test_compositions_by_name_and_by_keyword_are_one_model():
    by_name = _model("tdn-ltdm", "resnet")
    by_keyword = _model("tdn", "resnet", long_term=False)
    assert by_name.method == by_keyword.method == "tdn-ltdm"
    assert by_name.model_args == by_keyword.model_args and by_name.model_args["long_term"] is False
    assert _count(by_name, LongTermTDM) == 0 and _count(by_name, TemporalConv) > 0
    # A keyword overrides the name; naming the preset's own blocks names the preset.
    assert _model("tsn+stdm", "resnet", short_term=False).method == "tsn"
    assert parse_method("tsn+stdm-shift") == ("tsn", {"short_term": True, "shift": False})
    with pytest.raises(tdnzoo.UnknownModelError, match=r"unknown method prefix 'tsn\+flow'"):
        tdnzoo.create_model("tsn+flow_resnet18")
    with pytest.raises(ValueError, match="unknown block 'flow'"):
        tdnzoo.temporalize("resnet18", "tsn+flow")


def test_causal_is_a_build_option_of_every_block_by_keyword_or_name():
    offline = _model("tsm+ltdm", "resnet")
    by_keyword = _model("tsm+ltdm", "resnet", causal=True)
    by_name = _model("tsm+ltdm+causal", "resnet")
    assert by_keyword.method == by_name.method == "tsm+ltdm+causal"
    assert by_keyword.model_args["causal"] is by_name.model_args["causal"] is True
    layers = [m for m in by_name.modules() if isinstance(m, (TemporalShift, LongTermTDM, TemporalConv))]
    assert layers and all(m.causal for m in layers)
    assert not any(getattr(m, "causal", False) for m in offline.modules())
    by_name.load_state_dict(offline.state_dict())  # the same keys and shapes: offline weights load
    assert _model("tsn+causal", "resnet").method == "tsn"  # no temporal layer: TSN is causal as it is


@pytest.mark.parametrize("method", ["tsn+stdm", "tsm+ltdm", "tdn-stdm", "tdn+causal"])
def test_a_saved_composition_reloads_as_itself(method, tmp_path):
    model = _model(method, "resnet").eval()
    tdnzoo.save_pretrained(model, tmp_path, model_card=False)
    loaded = tdnzoo.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert loaded.method == method and loaded.pretrained_cfg["architecture"] == model.pretrained_cfg["architecture"]
    assert loaded.num_frames == model.num_frames and loaded.state_dict().keys() == model.state_dict().keys()
    x = _clip(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# -- a method of one's own -------------------------------------------------------------------------


class NeighbourMix(nn.Module):
    """A temporal layer of this test: ``x + W (x[t+1] - x[t])`` (zero at a clip's last segment), ``W`` a 1x1 conv.

    Not symmetric in time, so that reversing the segments changes the output."""

    def __init__(self, channels: int, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.mix = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clips = x.unflatten(0, (-1, self.num_segments))
        difference = torch.cat([clips[:, 1:] - clips[:, :-1], torch.zeros_like(clips[:, :1])], dim=1)
        return x + self.mix(difference.flatten(0, 1))


@pytest.fixture()
def mix_method():
    block = TemporalBlock("neighbour_mix", POSITION_MIXING, lambda channels, options: NeighbourMix(
        channels, options.num_segments), label="the neighbour mix", stages=(3, 4, 5))
    tdnzoo.register_method("mix", MethodPreset((block,), "TSN with a neighbour mix before each mixing op"))
    try:
        yield block
    finally:
        unregister_method("mix")
    assert "mix" not in tdnzoo.METHODS and "neighbour_mix" not in BLOCK_TABLE


def test_a_registered_method_works_by_name_on_three_families(mix_method):
    assert "mix" in tdnzoo.METHODS and "mix_resnet18" in tdnzoo.list_models("mix_*")
    for family in ("resnet", "convnext", "vit"):
        model = _model("mix", family)
        assert _count(model, NeighbourMix) > 0 and model.method == "mix" and model.num_frames == SEGMENTS
        assert all(isinstance(m.temporal, NeighbourMix) for m in model.modules() if isinstance(m, TemporalInsert))
        # The family survey's check: builds, trains a step, and the segments' order changes the output.
        backbone, kwargs = FAMILIES[family]
        check = check_family(family, backbone, "mix", size=SIZE, backbone_kwargs=kwargs)
        assert check.ok and check.temporal_modules == _count(model, NeighbourMix), check
        assert check.reversal_change > 1e-3, check
    # Its layer composes with the table's blocks by keyword, and the FLOPs count sees it.
    both = _model("mix", "resnet", short_term=True)
    assert both.method == "mix+stdm" and _count(both, ShortTermTDM) == 1 and both.num_frames == 5 * SEGMENTS
    plain = _model("tsn", "resnet")
    assert count_flops(_model("mix", "resnet"), input_size=SIZE) > count_flops(plain, input_size=SIZE)
    assert _model("tsn", "resnet", neighbour_mix=True).method == "tsn+neighbourmix"
    # The speed report times it as any method.
    config = SpeedConfig(models=("mix_test_resnet",), num_segments=SEGMENTS, size=SIZE, rounds=1, train_rounds=1,
                         warmup=0, throughput=False, num_classes=5)
    rows = run_speed_benchmark(config, progress=False).rows
    assert rows and {r["method"] for r in rows} == {"mix"} and all(r.get("latency_ms") for r in rows), rows


def test_register_method_refuses_bad_input(mix_method):
    with pytest.raises(ValueError, match="already registered"):
        tdnzoo.register_method("mix", MethodPreset(("shift",)))
    with pytest.raises(ValueError, match="lower-case"):
        tdnzoo.register_method("my_method", MethodPreset(("shift",)))
    with pytest.raises(ValueError, match="unknown blocks"):
        tdnzoo.register_method("other", MethodPreset(("motion",)))
    with pytest.raises(ValueError, match="taken"):
        tdnzoo.register_method("other", MethodPreset((TemporalBlock("shift", POSITION_MIXING, lambda c, o: nn.Identity()),)))
    with pytest.raises(ValueError, match="unknown position kind"):
        TemporalBlock("x", "after_head", lambda c, o: nn.Identity())
    assert BuildOptions(num_segments=4).shift_div == 8  # what a factory receives
