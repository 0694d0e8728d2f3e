"""ONNX export: onnxruntime parity for TSN, TSM and TDN, metadata, the built-in verification, the CLI."""
from __future__ import annotations

import json
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch

import tdnzoo.export.onnx as onnx_export
from tdnzoo import create_model, save_weights
from tdnzoo.cli import main
from tdnzoo.export import OnnxExportError, OnnxParityError, export_onnx, read_onnx_metadata
from tdnzoo.layers import TemporalShift

from .active_weights import activate

SIZE = 64
# One small backbone per method, as the issue asks: TSN on a ConvNeXt, TSM on a ResNet with
# basic blocks, TDN (5 frames per segment, both difference modules) on timm's tiny test ResNet.
MODELS = {"tsn": ("tsn_test_convnext", 3), "tsm": ("tsm_resnet18", 4), "tdn": ("tdn_test_resnet", 2)}
LABELS = tuple(f"action {i}" for i in range(6))


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _relative_error(got: np.ndarray, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((torch.from_numpy(got).double() - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    """Each method exported once with a dynamic batch; the tests below share the file."""
    name, segments = MODELS[request.param]
    torch.manual_seed(0)
    model = activate(create_model(name, num_segments=segments, num_classes=len(LABELS)))
    model.pretrained_cfg["label_names"] = LABELS
    model.train()  # export must not leave it in eval mode nor touch its BatchNorm statistics
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    path = tmp_path_factory.mktemp(request.param) / f"{name}.onnx"
    result = export_onnx(model, path, image_size=SIZE, dynamic_batch=True, model_name=f"{name}.synthetic")
    assert model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    return model.eval(), path, result


def test_onnxruntime_matches_pytorch_at_batch_1_and_3(exported):
    model, path, result = exported
    assert result.path == path and path.is_file()
    assert result.verified_batch_sizes == (1, 2) and result.max_error < 1e-4
    session = _session(path)
    (spec,) = session.get_inputs()
    assert spec.name == "video" and isinstance(spec.shape[0], str)
    assert spec.shape[1:] == [model.num_frames, 3, SIZE, SIZE]
    generator = torch.Generator().manual_seed(123)
    for batch in (1, 3):
        # Values beyond the unit range, so a wrong shift or a dropped difference cannot hide.
        x = 2 * torch.randn(batch, model.num_frames, 3, SIZE, SIZE, generator=generator)
        with torch.no_grad():
            expected = model(x)
        (got,) = session.run(["logits"], {"video": x.numpy()})
        assert got.shape == (batch, len(LABELS))
        assert _relative_error(got, expected) < 1e-4, f"{model.method} batch {batch}"


def test_metadata_records_layout_normalisation_and_labels(exported):
    model, path, _ = exported
    meta = read_onnx_metadata(path)
    cfg = model.pretrained_cfg
    assert meta["model_name"] == f"{cfg['architecture']}.synthetic"
    assert meta["architecture"] == cfg["architecture"] and meta["method"] == model.method
    assert meta["input_layout"] == "[B, T, 3, H, W]" and meta["input_name"] == "video"
    assert meta["input_shape"] == ["batch", model.num_frames, 3, SIZE, SIZE]
    assert meta["num_segments"] == model.num_segments
    assert meta["frames_per_segment"] == model.frames_per_segment == (5 if model.method == "tdn" else 1)
    assert meta["num_frames"] == model.num_segments * model.frames_per_segment
    assert "segment-major" in meta["frame_order"]
    assert meta["mean"] == pytest.approx(list(cfg["mean"])) and meta["std"] == pytest.approx(list(cfg["std"]))
    assert meta["num_classes"] == len(LABELS) and meta["label_names"] == list(LABELS)
    assert meta["dynamic_batch"] is True and meta["exporter"] == "torchscript" and meta["opset"] == 18
    # A runtime without tdnzoo reads the same strings.
    raw = _session(path).get_modelmeta().custom_metadata_map
    assert json.loads(raw["label_names"]) == list(LABELS) and raw["method"] == model.method


def _inplace_shift(self: TemporalShift, x: torch.Tensor) -> torch.Tensor:
    """A TSM shift written the way early TSM code did: in place through ``.data``.

    Right in eager mode, but a trace does not see writes through ``.data``, so the exported
    graph silently skips the shift.
    """
    out = x.clone()
    t = self.num_segments
    fold = x.shape[1] // self.fold_div
    view = out.data.view(-1, t, *x.shape[1:])
    src = x.data.view(-1, t, *x.shape[1:])
    view[:, :-1, :fold] = src[:, 1:, :fold]
    view[:, -1, :fold] = 0
    view[:, 1:, fold : 2 * fold] = src[:, :-1, fold : 2 * fold]
    view[:, 0, fold : 2 * fold] = 0
    return out


def test_export_refuses_a_graph_that_disagrees_with_pytorch(tmp_path):
    torch.manual_seed(0)
    model = activate(create_model("tsm_test_resnet", num_segments=3, num_classes=5)).eval()
    x = torch.randn(1, model.num_frames, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
        for m in model.modules():
            if isinstance(m, TemporalShift):
                m.forward = types.MethodType(_inplace_shift, m)
        assert torch.allclose(model(x), expected, atol=1e-6)  # the in-place shift is right in eager mode

    target = tmp_path / "tsm.onnx"
    with pytest.raises(OnnxParityError, match="disagrees with PyTorch") as info:
        export_onnx(model, target, image_size=SIZE)
    assert info.value.error > 1e-4 and not target.exists()

    # Unverified, the broken file is written: what the verification is there to prevent.
    result = export_onnx(model, target, image_size=SIZE, verify=False)
    assert result.max_error is None and target.is_file()
    (got,) = _session(target).run(["logits"], {"video": x.numpy()})
    assert _relative_error(got, expected) > 1e-3


def test_a_lost_dynamic_batch_axis_is_an_error(tmp_path, monkeypatch):
    real = onnx_export._export_proto
    # An exporter that ignores the request for a dynamic batch (as the dynamo exporter does on TDN).
    monkeypatch.setattr(onnx_export, "_export_proto", lambda *a, **k: real(*a, **{**k, "dynamic_batch": False}))
    model = create_model("tsn_test_resnet", num_segments=2, num_classes=5)
    with pytest.raises(OnnxExportError, match="fixed the batch axis to 2"):
        export_onnx(model, tmp_path / "m.onnx", image_size=SIZE, dynamic_batch=True)
    assert not (tmp_path / "m.onnx").exists()


def test_dynamo_exporter_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = activate(create_model("tsm_test_resnet", num_segments=2, num_classes=5)).eval()
    result = export_onnx(model, tmp_path / "m.onnx", image_size=SIZE, dynamic_batch=True, exporter="dynamo")
    assert result.max_error < 1e-4 and result.metadata["exporter"] == "dynamo"
    x = torch.randn(3, model.num_frames, 3, SIZE, SIZE)
    (got,) = _session(result.path).run(["logits"], {"video": x.numpy()})
    with torch.no_grad():
        assert _relative_error(got, model(x)) < 1e-4


def test_cli_exports_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(1)
    model = activate(create_model("tsn_test_resnet", num_segments=2, num_classes=5), seed=1).eval()
    weights = save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "out" / "tsn.onnx"
    argv = ["export", "onnx", "tsn_test_resnet", str(out), "--checkpoint", str(weights), "--num-segments", "2",
            "--size", str(SIZE), "--batch-size", "2", "--opset", "17"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "verified with onnxruntime at batch 2" in printed
    meta = read_onnx_metadata(out)
    assert meta["opset"] == 17 and meta["input_shape"] == [2, 2, 3, SIZE, SIZE] and meta["num_classes"] == 5
    # The file holds the checkpoint's weights, not a fresh random model.
    x = torch.randn(2, 2, 3, SIZE, SIZE)
    (got,) = _session(out).run(["logits"], {"video": x.numpy()})
    with torch.no_grad():
        assert _relative_error(got, model(x)) < 1e-4


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "onnx", "tdn_test_resnet", str(out), "--num-segments", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "too small" in err and "64x64" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["export", "onnx", "tdn_resnt18", str(out)]) == 2
    assert "tdn_resnet18" in capsys.readouterr().err
