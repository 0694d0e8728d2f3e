"""TDN's C kernels (tdnzoo/layers/kernels/ltdm.c) compute what the PyTorch ops compute.

They run on CPU whenever they can be built: the L-TDM's two inference kernels, the S-TDM's pooled
differences, the fusion, and the L-TDM gate + temporal conv under autograd. These tests pin each
against the PyTorch path (``TDNZOO_NATIVE_KERNELS=0``) and the official formulation, on shapes
that exercise their blocking (pixel counts not a multiple of the 32-pixel blocks, odd channel
counts, 2 threads), check that they step aside where they do not apply, and check the build
cache and the fallback when no compiler works.
"""
from __future__ import annotations

import os
import shlex
import shutil

import pytest
import torch
from torch import nn

import tdnzoo
from tdnzoo.layers import (
    LongTermStack,
    LongTermTDM,
    TemporalConv,
    _native,
    frame_differences,
    fuse_difference,
    reference_ops,
)
from tdnzoo.layers import tdm as tdm_module
from tdnzoo.layers._fast import avg_pool2x2

from .conftest import randomize_statistics, torch_threads

HAVE_COMPILER = shutil.which(shlex.split(os.environ.get("CC", "cc"))[0]) is not None
needs_compiler = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler: the kernel cannot be built here")


def _trained_looking(module: nn.Module, seed: int = 1) -> nn.Module:
    return randomize_statistics(module, seed, affine_std=0.3).eval()


def _stack(channels: int, segments: int) -> LongTermStack:
    torch.manual_seed(0)
    stack = LongTermStack()
    stack.add_module("ltdm", LongTermTDM(channels, num_segments=segments))
    stack.add_module("tconv", TemporalConv(channels, num_segments=segments))
    return _trained_looking(stack)


KERNELS = ("ltdm_gate", "ltdm_mixed", "fuse_upsampled_", "pooled_frame_differences", "gate_temporal_conv")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Per kernel entry point that tdm.py calls: for each call, whether the kernel ran (``True``)
    or declined (``False``), so a test knows the path it checks was taken."""
    calls = {name: [] for name in (*KERNELS, "fuse_upsampled_ after relu")}
    for name in KERNELS:
        inner = getattr(tdm_module, name)

        def counted(*args, _name=name, _inner=inner, **kwargs):
            out = _inner(*args, **kwargs)
            calls[_name].append(out is not None)
            if _name == "fuse_upsampled_":  # which fusions rode on a ReLU's pass (FusingReLU)
                calls["fuse_upsampled_ after relu"].append(kwargs.get("relu", False))
            return out

        monkeypatch.setattr(tdm_module, name, counted)
    return calls


def _torch_ops(stack: nn.Module, x: torch.Tensor, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as m, torch.inference_mode():
        m.setenv(_native.ENV_SWITCH, "0")
        return stack(x)


@needs_compiler
def test_kernel_builds_on_a_machine_with_a_compiler():
    assert _native.native_library() is not None


@needs_compiler
@pytest.mark.parametrize(
    "channels, segments, batch, size, threads",
    [(32, 4, 2, (6, 6), 1), (33, 3, 1, (5, 9), 2), (64, 8, 1, (14, 14), 2), (40, 2, 3, (7, 7), 1)],
)
def test_stack_matches_torch_ops_and_official(channels, segments, batch, size, threads, kernel_calls, monkeypatch):
    stack = _stack(channels, segments)
    x = torch.randn(batch * segments, channels, *size, generator=torch.Generator().manual_seed(2))
    with torch_threads(threads), torch.inference_mode():
        fused = stack(x)
    assert kernel_calls["ltdm_gate"] == [True] and kernel_calls["ltdm_mixed"] == [True]
    torch.testing.assert_close(fused, _torch_ops(stack, x, monkeypatch), rtol=1e-5, atol=1e-5)
    with reference_ops(), torch.no_grad():
        torch.testing.assert_close(fused, stack(x), rtol=1e-5, atol=1e-5)


@needs_compiler
def test_ltdm_alone_matches_without_temporal_conv(kernel_calls, monkeypatch):
    ltdm = _trained_looking(LongTermTDM(48, num_segments=4))
    x = torch.randn(8, 48, 9, 9, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        fused = ltdm(x)
    assert kernel_calls["ltdm_gate"] == [True] and kernel_calls["ltdm_mixed"] == [True]
    torch.testing.assert_close(fused, _torch_ops(ltdm, x, monkeypatch), rtol=1e-5, atol=1e-5)


@needs_compiler
def test_saturated_gates_stay_finite_and_exact():
    """Logits far past the sigmoid's range (the kernel clamps its exp): the PyTorch values, no NaN."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 16, 5, 7, generator=g) * 100
    mixed = torch.randn(2, 8, 5, 35, generator=g)
    mixed[:, :, -1] = 1.0
    weight = torch.randn(2, 16, 5, generator=g) * 1e3
    logits = torch.einsum("dck,dnkp->dncp", weight, mixed).view(2, 8, 16, 5, 7)
    expected = x + 0.5 * x * (torch.sigmoid(logits[0]) - torch.sigmoid(logits[1]))
    fused = _native.ltdm_gate(x, mixed, weight, None, num_segments=4)
    assert torch.isfinite(fused).all()
    assert (logits.abs() > 100).float().mean() > 0.5  # most gates saturated
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-3)


@needs_compiler
@pytest.mark.parametrize(
    "channels, segments, size",
    [(128, 4, (8, 8)), (48, 3, (5, 9)), (32, 2, (2, 3)), (64, 4, (7, 7)), (144, 2, (10, 10)), (272, 2, (6, 13)),
     (16, 2, (2, 2))],
)
def test_bottleneck_kernel_matches_torch_ops(channels, segments, size, kernel_calls, monkeypatch):
    """The mixed maps (reduction, differences, both 3x3 branches, pooling, odd-size upsampling) from
    C and from PyTorch. The shapes cover the kernel's blocking: 8 output channels (K = C/16 of 1, 2,
    3, 8, 9, 17), 48-pixel blocks with tails of 1 to 3 vectors, 64-channel passes of the reduction,
    and a map too small for whole-vector reads past its end."""
    ltdm = _trained_looking(LongTermTDM(channels, num_segments=segments))
    with torch.no_grad():
        for conv in (ltdm.conv_neighbor, ltdm.conv_pooled, ltdm.conv_full):
            conv.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(6))
    x = torch.randn(2 * segments, channels, *size, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        folded = ltdm._folded(cache=True)
        fused = ltdm._inference_mixed(x, folded)
        monkeypatch.setenv(_native.ENV_SWITCH, "0")
        expected = ltdm._inference_mixed(x, folded)
    assert kernel_calls["ltdm_mixed"] == [True, False]  # the C kernel, then the ops
    assert fused.shape == (2, 2 * segments, ltdm.hidden + 1, size[0] * size[1])
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("shape", [(2, 3, 56, 56), (1, 2, 7, 9), (1, 1, 2, 5), (1, 2, 1, 1), (2, 1, 6, 1)])
def test_max_pool_kernel_is_max_pool2d(shape):
    """The S-TDM stem's 3x3/2 max-pool in C: PyTorch's values exactly, odd sizes and NaN included."""
    from tdnzoo.layers._fast import FastMaxPool3x3S2

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(8))
    x.view(-1)[:: 7] = float("nan")
    expected = torch.nn.functional.max_pool2d(x, 3, 2, 1)
    torch.testing.assert_close(_native.max_pool3x3s2(x), expected, rtol=0, atol=0, equal_nan=True)
    with torch.inference_mode():
        torch.testing.assert_close(FastMaxPool3x3S2()(x), expected, rtol=0, atol=0, equal_nan=True)
    assert _native.max_pool3x3s2(x.double()) is None  # float32 only: the module takes strided maxima


@needs_compiler
def test_fusing_relu_fuses_in_its_own_pass_only_when_asked():
    """Inside fusion_in_activation: relu then TDN's fusion, bit for bit, in one kernel call. Outside
    it, in another thread, under autograd or on a layout the kernel does not take: a plain ReLU."""
    import threading

    from tdnzoo.layers import FusingReLU, fusion_in_activation

    g = torch.Generator().manual_seed(9)
    x, small = torch.randn(2, 16, 6, 10, generator=g), torch.randn(2, 16, 3, 5, generator=g)
    expected = fuse_difference(torch.relu(x), small, 0.5, 0.5)
    relu = FusingReLU()
    with torch.inference_mode():
        with fusion_in_activation(small, 0.5, 0.5) as pending:
            other = x.clone()
            seen = threading.Thread(target=lambda: relu(other))  # a thread of its own: no fusion there
            seen.start(), seen.join()
            torch.testing.assert_close(other, torch.relu(x), rtol=0, atol=0)
            assert not pending.done
            mine = x.clone()
            assert relu(mine) is mine and pending.done
            again = x.clone()
            relu(again)  # the fusion happens once
        torch.testing.assert_close(mine, expected, rtol=0, atol=0)
        torch.testing.assert_close(again, torch.relu(x), rtol=0, atol=0)
        with fusion_in_activation(small, 0.5, 0.5) as pending:
            cl = relu(x.contiguous(memory_format=torch.channels_last))  # not the kernel's layout
        assert not pending.done
        torch.testing.assert_close(cl, torch.relu(x), rtol=0, atol=0)
    leaf = x.clone().requires_grad_()
    with fusion_in_activation(small, 0.5, 0.5) as pending:
        out = relu(leaf * 1.0)  # autograd records it: a plain ReLU
    assert not pending.done
    torch.testing.assert_close(out, torch.relu(x), rtol=0, atol=0)


@needs_compiler
def test_whole_tdn_model_matches_torch_ops(kernel_calls, monkeypatch):
    torch.manual_seed(0)
    model = _trained_looking(tdnzoo.create_model("tdn_test_resnet", num_segments=4, num_classes=5))
    clip = torch.randn(2, model.num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    for calls in kernel_calls.values():  # not the construction-time checks' runs
        calls.clear()
    with torch_threads(2), torch.inference_mode():
        fused = model(clip)
    # The S-TDM fusions are plain out-of-place fuse_difference calls in the model (tdnzoo.models.fusion).
    assert kernel_calls["pooled_frame_differences"] == [True] and kernel_calls["fuse_upsampled_"] == []
    blocks = sum(isinstance(m, LongTermStack) for m in model.modules())
    assert kernel_calls["ltdm_gate"] == kernel_calls["ltdm_mixed"] == [True] * blocks and blocks > 0
    torch.testing.assert_close(fused, _torch_ops(model, clip, monkeypatch), rtol=1e-5, atol=1e-5)


@needs_compiler
def test_whole_tdn_model_training_step_matches_torch_ops(kernel_calls, monkeypatch):
    """A training forward and backward: the S-TDM input and every L-TDM gate through C, the same
    loss gradients and BN statistics as the ops."""
    torch.manual_seed(0)
    model = tdnzoo.create_model("tdn_test_resnet", num_segments=4, num_classes=5, drop_rate=0.0)
    model = randomize_statistics(model).train()  # no dropout: both runs must see the same network
    clip = torch.randn(2, model.num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for calls in kernel_calls.values():  # not the construction-time checks' runs
        calls.clear()

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        logits = model(clip)
        logits.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()}

    with torch_threads(2):
        logits, grads, after = step()
    blocks = sum(isinstance(m, LongTermStack) for m in model.modules())
    assert kernel_calls["pooled_frame_differences"] == [True]
    assert kernel_calls["gate_temporal_conv"] == [True] * blocks and blocks > 0
    with monkeypatch.context() as m:
        m.setenv(_native.ENV_SWITCH, "0")
        logits_ref, grads_ref, after_ref = step()
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-4, msg=name)
    for key in after:
        torch.testing.assert_close(after[key], after_ref[key], rtol=1e-5, atol=1e-5, msg=key)


def test_kernels_step_aside_where_they_do_not_apply(kernel_calls):
    """channels_last maps, float64, autocast and the reference ops all take the PyTorch path."""
    stack = _stack(32, 4)
    x = torch.randn(8, 32, 6, 6)
    with torch.inference_mode():
        assert stack.ltdm.fused_forward(x.contiguous(memory_format=torch.channels_last)) is None
        assert stack.double().ltdm.fused_forward(x.double()) is None
        with reference_ops():
            stack(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stack.float().ltdm.fused_forward(x) is None
    assert not any(kernel_calls.values())


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    assert _native.native_library() is None


@needs_compiler
def test_build_is_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TDNZOO_KERNEL_CACHE", str(tmp_path))
    assert _native.native_library() is not None
    built = list(tmp_path.glob("ltdm-*.so"))
    assert len(built) == 1
    _native._load.cache_clear()  # a new process: finds the library, builds nothing

    def no_build(target, compiler):
        raise AssertionError("rebuilt although the cached library fits")

    monkeypatch.setattr(_native, "_build", no_build)
    assert _native.native_library() is not None
    assert list(tmp_path.glob("*")) == built


def _failing_compiler(tmp_path) -> str:
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 1\n")
    cc.chmod(0o755)
    return str(cc)


def test_falls_back_quietly_without_a_compiler(tmp_path, monkeypatch, recwarn):
    monkeypatch.setenv("TDNZOO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    stack = _stack(32, 4)
    x = torch.randn(8, 32, 6, 6)
    with torch.inference_mode():
        out = stack(x)
    assert _native.native_library() is None and not recwarn.list
    with reference_ops(), torch.no_grad():
        torch.testing.assert_close(out, stack(x), rtol=1e-5, atol=1e-5)


def test_falls_back_with_one_warning_when_the_compiler_fails(tmp_path, monkeypatch, kernel_calls):
    monkeypatch.setenv("TDNZOO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", _failing_compiler(tmp_path))
    stack = _stack(32, 4)
    x = torch.randn(8, 32, 6, 6)
    with pytest.warns(RuntimeWarning, match="broken-cc: internal error"), torch.inference_mode():
        out = stack(x)
    with reference_ops(), torch.no_grad():
        torch.testing.assert_close(out, stack(x), rtol=1e-5, atol=1e-5)
    assert _native.native_library() is None  # remembered: no second build attempt, no second warning
    assert not list(tmp_path.glob("*.so"))
    assert not any(any(ran) for ran in kernel_calls.values())


@needs_compiler
@pytest.mark.parametrize("frames_per_segment, size", [(5, (224, 224)), (3, (9, 13)), (2, (2, 2))])
def test_pooled_frame_differences_match_torch_ops(frames_per_segment, size):
    frames = torch.randn(4, 3 * frames_per_segment, *size, generator=torch.Generator().manual_seed(8))
    fused = _native.pooled_frame_differences(frames, frames_per_segment)
    expected = frame_differences(avg_pool2x2(frames), frames_per_segment)
    torch.testing.assert_close(fused, expected, rtol=1e-6, atol=1e-6)
    with reference_ops():
        torch.testing.assert_close(fused, torch.nn.functional.avg_pool2d(frame_differences(frames, frames_per_segment), 2),
                                   rtol=1e-5, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.75, 0.25), (1.0, 0.5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fusion_kernel_matches_torch_ops(alpha, beta, channels_last, monkeypatch):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 24, 10, 14, generator=g)
    small = torch.randn(4, 24, 5, 7, generator=g)
    if channels_last:
        small = small.contiguous(memory_format=torch.channels_last)
    fused = _native.fuse_upsampled_(x.clone(), small, alpha, beta)
    with reference_ops():
        torch.testing.assert_close(fused, fuse_difference(x, small, alpha, beta), rtol=1e-6, atol=1e-6)
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    torch.testing.assert_close(fused, fuse_difference(x, small, alpha, beta), rtol=0, atol=0)  # same formula


@needs_compiler
def test_fusion_kernel_declines_other_sizes():
    x = torch.randn(2, 8, 7, 7)
    assert _native.fuse_upsampled_(x, torch.randn(2, 8, 3, 3), 0.5, 0.5) is None
    assert _native.fuse_upsampled_(x.transpose(2, 3), torch.randn(2, 8, 3, 3), 0.5, 0.5) is None


@needs_compiler
def test_stdm_stage_map_stays_channels_last_for_the_fusion_kernel(monkeypatch):
    torch.manual_seed(0)
    model = _trained_looking(tdnzoo.create_model("tdn_test_resnet", num_segments=4, num_classes=5))
    frames = torch.randn(8, model.frames_per_segment * 3, 64, 64)
    with torch.inference_mode():
        stem, stage = model.short_term(frames)
        assert stage.is_contiguous(memory_format=torch.channels_last)
        monkeypatch.setenv(_native.ENV_SWITCH, "0")
        stem_ref, stage_ref = model.short_term(frames)
    torch.testing.assert_close(stage, stage_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stem, stem_ref, rtol=1e-5, atol=1e-5)


def _gradients(module: nn.Module, x: torch.Tensor, seed: int = 10) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)))
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out.detach(), {"input": x.grad, **grads}


@needs_compiler
@pytest.mark.parametrize("with_tconv", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_training_kernels_match_torch_ops(with_tconv, train, kernel_calls, monkeypatch):
    """Outputs and every gradient (input, L-TDM weights and BN affines, temporal taps) as the ops give them."""
    torch.manual_seed(0)
    module = _stack(40, 4) if with_tconv else _trained_looking(LongTermTDM(40, num_segments=4))
    module.train(train)
    x = torch.randn(8, 40, 5, 9, generator=torch.Generator().manual_seed(11))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    with torch_threads(2):
        out, grads = _gradients(module, x)
    assert kernel_calls["gate_temporal_conv"] == [True]
    fused_state = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    with monkeypatch.context() as m:
        m.setenv(_native.ENV_SWITCH, "0")
        out_ref, grads_ref = _gradients(module, x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-5, msg=name)
    for key, value in module.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(fused_state[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace:FutureWarning")
def test_tracing_takes_the_torch_ops(kernel_calls):
    """A traced graph (ONNX export, FLOP counts) must hold PyTorch ops, not an opaque C call."""
    stack = _stack(32, 4)
    x = torch.randn(8, 32, 6, 6)
    for train in (True, False):
        stack.train(train)
        traced = torch.jit.trace(stack, x, check_trace=False)
        assert not any(kernel_calls.values())
        torch.testing.assert_close(traced(x), stack(x), rtol=1e-5, atol=1e-5)
        for ran in kernel_calls.values():  # the eager call may use the kernels
            ran.clear()
