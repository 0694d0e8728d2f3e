"""Causal TSM / TDN and the streamer: step ``k`` of a stream equals the causal model's segment ``k`` offline."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import tdnzoo
from tdnzoo.layers import LongTermTDM, TemporalConv, TemporalShift
from tdnzoo.models.streaming import StreamingLayer

from .conftest import randomize_statistics, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3
# A CNN, a CNN in channels-last memory, a backbone whose maps are channels-last tensors, a ViT.
BACKBONES = {"test_resnet": None, "test_convnext": torch.channels_last, "test_mambaout": None, "test_vit": None}


def _randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Weights that let every temporal path carry signal: besides BatchNorm and the temporal conv
    (:func:`randomize_statistics`), ConvNeXt's layer scales, which start at 1e-6."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    return randomize_statistics(model).eval()


@functools.cache
def _built(method: str, backbone: str, fused: bool = False, causal: bool = True) -> tdnzoo.VideoClassifier:
    """A model built once per test session (the tests never change it)."""
    if fused:
        return tdnzoo.fuse_for_inference(_built(method, backbone, causal=causal))
    torch.manual_seed(0)
    return _randomized(tdnzoo.create_model(f"{method}_{backbone}", num_classes=5, num_segments=STEPS, causal=causal))


def _model(method: str, backbone: str, fused: bool) -> tdnzoo.VideoClassifier:
    """A causal model with randomized weights."""
    model = _built(method, backbone, fused)
    if BACKBONES[backbone] is not None:
        model = model.to(memory_format=BACKBONES[backbone])
    return model


def _clip(model: tdnzoo.VideoClassifier, batch: int = 2) -> torch.Tensor:
    size = model.probe_size if model.pretrained_cfg.get("fixed_input_size") else max(32, model.min_size)
    return torch.randn(batch, model.num_frames, 3, size, size, generator=torch.Generator().manual_seed(1))


def _segments(model: tdnzoo.VideoClassifier, clip: torch.Tensor) -> list[torch.Tensor]:
    return list(clip.split(model.frames_per_segment, dim=1))


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("method", ["tsm", "tdn"])
def test_stream_steps_equal_the_causal_model_offline(method, backbone, fused):
    model = _model(method, backbone, fused)
    clip = _clip(model)
    with torch.no_grad():
        offline = model.forward_segments(clip)  # [B, T, classes]
    live = tdnzoo.stream(model)
    steps = torch.stack([live.step(frames) for frames in _segments(model, clip)], dim=1)
    assert steps.shape == offline.shape == (2, STEPS, 5)
    assert relative_error(steps, offline) <= 1e-5
    assert live.cache_bytes() > 0
    # The caches matter: the last segment streamed alone (after reset) is another output.
    live.reset()
    alone = live.step(_segments(model, clip)[-1])
    assert relative_error(alone, offline[:, -1]) > 1e-3


@pytest.mark.parametrize("method", ["tsm", "tdn"])
def test_causal_model_never_reads_a_later_segment(method):
    model = _model(method, "test_resnet", fused=False)
    clip = _clip(model)
    changed = clip.clone()
    changed[:, -model.frames_per_segment:] += 1.0
    with torch.no_grad():
        before, after = model.forward_segments(clip), model.forward_segments(changed)
    torch.testing.assert_close(before[:, :-1], after[:, :-1], rtol=0, atol=0)
    assert not torch.allclose(before[:, -1], after[:, -1])
    # The offline model does read ahead: the same change moves its earlier segments.
    offline = _built(method, "test_resnet", causal=False)
    with torch.no_grad():
        assert not torch.allclose(offline.forward_segments(clip)[:, :-1], offline.forward_segments(changed)[:, :-1])


@pytest.mark.parametrize("method", ["tsn", "tsm", "tdn"])
def test_causal_model_has_the_offline_parameters_and_loads_offline_weights(method):
    offline, causal = _built(method, "test_resnet", causal=False), copy.deepcopy(_built(method, "test_resnet"))
    assert {k: v.shape for k, v in causal.state_dict().items()} == {k: v.shape for k, v in offline.state_dict().items()}
    causal.load_state_dict(offline.state_dict())  # strict
    assert tdnzoo.models.is_causal(causal) and (method == "tsn") == tdnzoo.models.is_causal(offline)
    assert causal.model_args["causal"] is True


def test_forward_segments_mean_is_forward():
    model = _built("tdn", "test_resnet", causal=False)
    clip = _clip(model)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_segments(clip).mean(1), model(clip), rtol=0, atol=0)


def test_causal_model_reloads_causal_from_an_export(tmp_path):
    model = _built("tdn", "test_resnet")
    tdnzoo.save_pretrained(model, tmp_path / "export")
    reloaded = tdnzoo.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True)
    assert tdnzoo.models.is_causal(reloaded) and reloaded.pretrained_cfg.get("causal") is True


def test_causal_layers():
    x = torch.randn(2 * 4, 16, 3, 3)
    frames = x.unflatten(0, (2, 4))
    shifted = TemporalShift(4, 8, causal=True)(x).unflatten(0, (2, 4))
    # TSM online shift: channels [0, C/8) from the previous segment (zero at the first), the rest stay.
    torch.testing.assert_close(shifted[:, 1:, :2], frames[:, :-1, :2], rtol=0, atol=0)
    assert (shifted[:, 0, :2] == 0).all()
    torch.testing.assert_close(shifted[:, :, 2:], frames[:, :, 2:], rtol=0, atol=0)
    conv = TemporalConv(16, 4, causal=True)
    torch.testing.assert_close(conv(x), TemporalShift(4, 8, causal=True)(x))  # starts as the causal shift
    with torch.no_grad():
        conv.weight.normal_()
    w = conv.weight[:, 0]
    expected = w[:, 1, None, None] * frames
    expected[:, 1:] += w[:, 0, None, None] * frames[:, :-1]
    torch.testing.assert_close(conv(x).unflatten(0, (2, 4)), expected)
    ltdm = LongTermTDM(16, 4, reduction=4, causal=True).eval()
    offline = LongTermTDM(16, 4, reduction=4).eval()
    ltdm.load_state_dict(offline.state_dict())
    with torch.no_grad():
        _, d_backward = offline.differences(x)
        torch.testing.assert_close(ltdm(x), x + x * offline.attention(d_backward))


def test_stream_refuses_an_offline_model_and_a_wrong_segment():
    with pytest.raises(ValueError, match="not causal"):
        tdnzoo.stream(_built("tsm", "test_resnet", causal=False))
    live = tdnzoo.stream(_model("tdn", "test_resnet", fused=False))
    with pytest.raises(ValueError, match=r"\[B, 5, 3, H, W\]"):
        live.step(torch.randn(1, 1, 3, 64, 64))
    live.step(torch.randn(1, 5, 3, 64, 64))
    with pytest.raises(ValueError, match="reset"):
        live.step(torch.randn(1, 5, 3, 96, 96))


def test_prediction_is_the_mean_of_the_last_window_steps():
    model = _model("tsm", "test_resnet", fused=False)
    live = tdnzoo.stream(model, window=2)
    steps = [live.step(torch.randn(1, 1, 3, 32, 32)) for _ in range(3)]
    torch.testing.assert_close(live.prediction(), (steps[1] + steps[2]) / 2)
    assert all(isinstance(m, StreamingLayer) for m in live.layers) and live.layers
    assert not any(isinstance(m, StreamingLayer) for m in model.modules())  # the model itself is untouched


@pytest.mark.parametrize("method", ["tsm", "tdn"])
def test_compiled_steps_are_one_graph_reused_across_streams(method):
    # Dynamo and AOT autograd's functionalization (what inductor receives) without inductor's slow
    # CPU code generation: the caches are buffers updated in place, traced without graph breaks.
    model = _model(method, "test_resnet", fused=True)
    clip = _clip(model)
    counter = CompileCounterWithBackend("aot_eager")
    live = tdnzoo.stream(model, compile=True, compile_options={"backend": counter})
    with torch.no_grad():
        offline = model.forward_segments(clip)
    for _ in range(2):  # a second stream reuses the graph: no recompilation after reset()
        live.reset()
        steps = torch.stack([live.step(frames) for frames in _segments(model, clip)], dim=1)
        assert relative_error(steps, offline) <= 1e-5
    assert counter.frame_count == 1  # the first step of a stream runs eagerly (it allocates the caches)
