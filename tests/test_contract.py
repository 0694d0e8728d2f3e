"""timm's model contract on TSN, TSM and TDN, checked as timm's own tests/test_models.py checks timm models.

Every item is an assertion over ``tdnzoo.METHODS`` x a few backbone families: cfg fields, num_features /
head_hidden_size, unpooled outputs and builder keywords, features_only / feature_info,
forward_intermediates and pruning, gradient checkpointing (outputs, gradients, recomputation),
group_matcher and layer decay, torch.fx, torch.export (the ahead-of-time path; torch.jit.script refuses, naming
it). Feature maps are per segment: ``[B*T, C, h, w]``.
"""
from __future__ import annotations

import copy
import math

import pytest
import timm
import timm.optim
import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import group_parameters

import tdnzoo
from tdnzoo.models.contract import VideoFeatures, prefix_group_matcher

from .active_weights import activate

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONES = ["resnet18", "mobilenetv3_small_050", "convnext_atto", "regnety_002", "efficientnet_b0"]
CASES = [(m, b) for b in BACKBONES for m in tdnzoo.METHODS]
IDS = [f"{m}_{b}" for m, b in CASES]
SIZE = 64
SEGMENTS = 2


def _model(method: str, backbone: str, **kwargs) -> tdnzoo.VideoClassifier:
    torch.manual_seed(0)
    kwargs.setdefault("num_classes", 5)
    return tdnzoo.create_model(f"{method}_{backbone}", num_segments=SEGMENTS, drop_rate=0.0, **kwargs)


def _clip(model, batch: int = 1, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_frames, model.in_chans, size, size, generator=g)


def _grid(size: int, reduction: int) -> int:
    return math.ceil(size / reduction)


@pytest.fixture(scope="module")
def models():
    """One eval-mode model per case, shared by the tests that do not change it."""
    cache: dict[tuple[str, str], tdnzoo.VideoClassifier] = {}

    def get(method: str, backbone: str) -> tdnzoo.VideoClassifier:
        if (method, backbone) not in cache:
            cache[method, backbone] = activate(_model(method, backbone)).eval()
        return cache[method, backbone]

    return get


# -- cfg, num_features, head ------------------------------------------------------------------


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_default_cfg_and_widths(models, method, backbone):
    model = models(method, backbone)
    cfg = model.default_cfg
    assert cfg is model.pretrained_cfg
    state = model.state_dict()
    for key in ("first_conv", "classifier"):
        names = (cfg[key],) if isinstance(cfg[key], str) else cfg[key]
        assert all(f"{n}.weight" in state for n in names), (key, names)
    plain = timm.create_model(backbone)
    assert model.num_features == plain.num_features  # channels of forward_features (MobileNetV3: before its head conv)
    assert model.head_hidden_size == getattr(plain, "head_hidden_size", plain.num_features)
    assert cfg["pool_size"] == (_grid(224, model.feature_info[-1]["reduction"]),) * 2 and cfg["input_size"] == (3, 224, 224)
    x = _clip(model, size=cfg["input_size"][-1])
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (SEGMENTS, model.num_features, *cfg["pool_size"])  # per segment
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_builder_keywords(method, backbone):
    model = _model(method, backbone, num_classes=0, global_pool="", drop_path_rate=0.1,
                   pretrained_cfg_overlay={"crop_pct": 1.0})
    x = _clip(model)
    with torch.no_grad():
        out = model.eval()(x)
    width = model.num_features if "mobilenetv3" not in backbone else model.head_hidden_size  # its head conv runs
    grid = _grid(SIZE, model.feature_info[-1]["reduction"])
    assert out.shape == (1, width, grid, grid)  # unpooled, the mean over segments
    assert model.num_classes == 0 and model.model_args["backbone_kwargs"]["global_pool"] == ""
    assert any(isinstance(m, timm.layers.DropPath) and m.drop_prob > 0 for m in model.modules())
    assert model.pretrained_cfg["crop_pct"] == 1.0
    model.reset_classifier(0, "avg")
    with torch.no_grad():
        assert model(x).shape == (1, model.head_hidden_size)


def test_keywords_timm_does_not_take_are_named():
    with pytest.raises(TypeError, match=r"shift_dv.*not tdnzoo method options.*Did you mean shift_div"):
        tdnzoo.create_model("tsm_resnet18", num_segments=SEGMENTS, shift_dv=4)


@pytest.mark.parametrize("method", tdnzoo.METHODS)
def test_in_chans(method):
    if method == "tdn":
        with pytest.raises(ValueError, match=r"TDN takes RGB frames \(in_chans=3\), got in_chans=1"):
            _model(method, "resnet18", in_chans=1)
        return
    model = _model(method, "resnet18", in_chans=1).eval()
    assert model.in_chans == 1 and model.pretrained_cfg["input_size"] == (1, 224, 224)
    assert model(_clip(model)).shape == (1, 5)
    with pytest.raises(ValueError, match=r"expected 1 channels at dim 2.*got shape \(1, 2, 3, 64, 64\)"):
        model(torch.zeros(1, SEGMENTS, 3, SIZE, SIZE))


# -- features ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_forward_intermediates(models, method, backbone):
    model = models(method, backbone)
    x = _clip(model)
    info = model.feature_info
    assert len(info) >= 4 and all(f["module"].startswith("backbone.") for f in info)
    for f in info:
        model.get_submodule(f["module"])  # paths in the video model
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))  # the same fused forward
        assert [m.shape for m in maps] == [
            (SEGMENTS, f["num_chs"], _grid(SIZE, f["reduction"]), _grid(SIZE, f["reduction"])) for f in info
        ]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and all(torch.equal(a, b) for a, b in zip(last_two, maps[-2:]))
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert torch.equal(early[0], maps[1])


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_features_only(models, method, backbone):
    full = models(method, backbone)
    x = _clip(full)
    with torch.no_grad():
        expected = full.forward_intermediates(x, intermediates_only=True)
    features = _model(method, backbone, features_only=True, out_indices=(1, 2))
    assert isinstance(features, VideoFeatures)
    features.model.load_state_dict(full.state_dict(), strict=False)  # the pruned model keeps the trunk's keys
    features.eval()
    info = features.feature_info
    assert info.out_indices == (1, 2) and info.channels() == [f["num_chs"] for f in full.feature_info[1:3]]
    assert info.module_name() == [f["module"] for f in full.feature_info[1:3]]
    with torch.no_grad():
        out = features(x)
    assert len(out) == 2
    for o, c, r, e in zip(out, info.channels(), info.reduction(), expected[1:3]):
        assert o.shape == (SEGMENTS, c, _grid(SIZE, r), _grid(SIZE, r))  # per segment
        torch.testing.assert_close(o, e)  # pruning changes nothing before the last stage kept
    assert features.model.num_classes == 0 and len(features.model.state_dict()) < len(full.state_dict())  # pruned
    default = _model(method, backbone, features_only=True)
    assert default.feature_info.channels() == [f["num_chs"] for f in full.feature_info]


def test_pruning_keeps_the_surviving_tdn_fusions():
    model = activate(_model("tdn", "resnet18")).eval()
    x = _clip(model)
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert model.fusion_points == ("maxpool", "layer1.1.act2")
    with torch.no_grad():
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(got, expected[:2]))
    assert model.prune_intermediate_layers([0]) == [0]
    assert model.fusion_points == () and isinstance(model.short_term.stage, torch.nn.Identity)


# -- training ---------------------------------------------------------------------------------


def _inner_conv(model) -> torch.nn.Module:
    """The last conv of the last stage: in a block, inside what the backbone checkpoints (not a downsample)."""
    stage = model.feature_info[-1]["module"]
    return [m for n, m in model.named_modules() if n.startswith(f"{stage}.") and isinstance(m, torch.nn.Conv2d)][-1]


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_grad_checkpointing(method, backbone):
    model = activate(_model(method, backbone)).eval()  # eval: no batch statistics, both runs comparable
    plain = copy.deepcopy(model)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    x = _clip(model)
    runs = []
    for m in (plain, model):
        calls = []
        handle = _inner_conv(m).register_forward_hook(lambda *_, calls=calls: calls.append(1))
        # Without early stop every checkpointed segment is recomputed whole, TDN's fusions included.
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            out = m(x)
            forward_calls = len(calls)
            out.square().sum().backward()
        handle.remove()
        runs.append((out.detach(), [p.grad for p in m.parameters()], forward_calls, len(calls)))
    (out0, grads0, f0, n0), (out1, grads1, f1, n1) = runs
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    for g0, g1 in zip(grads0, grads1):
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            torch.testing.assert_close(g1, g0)
    assert n0 == f0 and n1 > f1  # recomputed in backward only with checkpointing
    if method == "tdn":
        assert all(model.backbone.get_submodule(p).difference is None for p in model.fusion_points)


def test_tdn_checkpointing_hands_each_clip_its_own_maps():
    """Two clips through TDN, then backward in the other order: each recomputed fusion gets its clip's maps."""
    model = activate(_model("tdn", "resnet18")).eval()
    plain = copy.deepcopy(model)
    model.set_grad_checkpointing(True)
    fusion = model.backbone.get_submodule(model.fusion_points[1])  # inside layer1, a checkpointed stage
    calls = []
    fusion.register_forward_hook(lambda *_: calls.append(1))
    a, b = _clip(model, seed=1), _clip(model, seed=2)
    grads = []
    for m in (plain, model):
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            out_a, out_b = m(a), m(b)
            (2 * out_b.square().sum()).backward()
            out_a.sum().backward()
        grads.append([p.grad for p in m.parameters()])
    assert len(calls) == 4  # two forwards, two recomputations
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g1, g0)


def test_tdn_refuses_reentrant_checkpointing():
    model = _model("tdn", "resnet18")
    model.set_grad_checkpointing(True)
    timm.layers.set_reentrant_ckpt(True)
    try:
        with pytest.raises(RuntimeError, match="reentrant"):
            model(_clip(model))
    finally:
        timm.layers.set_reentrant_ckpt(False)


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_group_matcher_and_layer_decay(models, method, backbone):
    model = models(method, backbone)
    plain = timm.create_model(backbone)
    for coarse in (True, False):
        layers = group_parameters(model, model.group_matcher(coarse=coarse), reverse=True)
        plain_layers = group_parameters(plain, plain.group_matcher(coarse=coarse), reverse=True)
        assert max(layers.values()) == max(plain_layers.values())  # the backbone's groups, no more
        for name, layer in plain_layers.items():
            if f"backbone.{name}" in layers:
                assert layers[f"backbone.{name}"] == layer, name
        if method == "tdn":
            stem = plain_layers[next(iter(plain.state_dict()))]
            assert {layers[n] for n in layers if n.startswith("short_term.")} == {stem}  # S-TDM joins the stem
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.7)
    scales = {g["lr_scale"] for g in optimizer.param_groups}
    plain_scales = {g["lr_scale"] for g in timm.optim.create_optimizer_v2(plain, "sgd", lr=0.1, layer_decay=0.7).param_groups}
    assert len(scales) > 2 and scales == plain_scales


def test_prefix_group_matcher_anchors_every_alternative():
    matcher = prefix_group_matcher({"stem": r"^conv1|bn1|maxpool", "blocks": [(r"^layer(\d+)", None), (r"fc|^norm", (99,))]},
                                   "backbone.")
    import re

    stem = re.compile(matcher["stem"])
    assert stem.match("backbone.bn1.weight") and not stem.match("bn1.weight") and not stem.match("backbone.layer1.0.bn1.weight")
    assert re.compile(matcher["blocks"][0][0]).match("backbone.layer3.1").groups() == ("3",)
    assert re.compile(matcher["blocks"][1][0]).match("backbone.norm.weight") and matcher["blocks"][1][1] == (99,)


# -- torch.fx and TorchScript -----------------------------------------------------------------


def _fx_extractor(model):
    """timm's test_models.py route: torchvision's feature extractor with timm's leaf modules and functions."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    tracer_kwargs = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("method,backbone", CASES, ids=IDS)
def test_fx(models, method, backbone):
    model = models(method, backbone)
    x = _clip(model)
    traced = torch.fx.symbolic_trace(model)
    extractor = _fx_extractor(model)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(traced(x), expected)
        assert torch.equal(next(iter(extractor.eval()(x).values())), expected)
    with pytest.raises(ValueError, match=r"expected .* frames"):  # the input check is a leaf, not traced away
        traced(torch.zeros(1, model.num_frames + 1, 3, SIZE, SIZE))
    # Training mode: traced with its own graph (dropout, batch statistics), every parameter learns.
    trained = copy.deepcopy(model).train()
    extractor = _fx_extractor(trained).train()
    out = next(iter(extractor(x).values()))
    torch.testing.assert_close(out, trained(x))
    out.square().mean().backward()
    assert all(p.grad is not None for p in extractor.parameters())


EXPORT_CASES = [(m, "resnet18", {}) for m in ("tsn", "tsm", "tdn")] + [
    ("tdn", "convnext_atto", {}),  # channels-last maps and a stem of its own
    ("tsm", "resnet18", {"short_term": True, "long_term": True}),  # a composition: every block kind
]


@pytest.mark.parametrize("method,backbone,blocks", EXPORT_CASES, ids=[f"{m}_{b}{'+' if k else ''}" for m, b, k in EXPORT_CASES])
def test_torch_export_matches_eager(method, backbone, blocks):
    model = activate(_model(method, backbone, **blocks)).eval()
    x = _clip(model, batch=2)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-6)
        # The program keeps the model's weights under their names, and the hand-over left no map behind.
        assert program.state_dict.keys() <= model.state_dict().keys()
        assert all(model.backbone.get_submodule(p).difference is None for p in model.fusion_points)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("method", ["tsn", "tdn"])
def test_torchscript_refuses_naming_torch_export_and_onnx(method):
    model = _model(method, "resnet18")
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script does not support .*torch\.export\.export.*ONNX"):
        torch.jit.script(model)


# -- names ------------------------------------------------------------------------------------


def test_list_models_keywords():
    assert tdnzoo.list_models(module="tsm", pretrained=True, include_tags=False) == ["tsm_resnet50"]
    assert set(tdnzoo.list_models(module="tsm", pretrained=True)) == set(tdnzoo.list_pretrained("tsm_*"))
    convnext = tdnzoo.list_models(module="convnext")
    assert convnext and all("convnext" in n for n in convnext) and {n.split("_", 1)[0] for n in convnext} == set(tdnzoo.METHODS)
    assert tdnzoo.list_models(pretrained=True, exclude_filters=["tdn_*", "tsm_*"]) == []
    tagged = tdnzoo.list_models("tdn_resnet101", include_tags=True)
    assert tagged and all(n.startswith("tdn_resnet101.") for n in tagged)
    assert "tdn_resnet18" in tdnzoo.list_models(include_tags=True)  # no weights: listed plain
    assert "tdn_resnet50" not in tdnzoo.list_models("tdn_resnet*", exclude_filters="tdn_resnet50")
