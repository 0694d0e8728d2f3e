"""Predicting and evaluating with a tdnzoo export (``save_pretrained``): ``local-dir:`` and, offline, ``hf-hub:``
through a hand-made Hugging Face cache; the export's weights are the ones used, and a damaged weights file
is one clear line naming it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import constants

import tdnzoo
from tdnzoo.cli import main as cli_main
from tdnzoo.eval import build_eval_dataset, evaluate

from .datagen import class_frames, make_folder_dataset, write_video

REPO = "tdnzoo-test/tiny-export"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
NAMES = ["class_0", "class_1", "class_2"]  # the folder dataset's class folders

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> SimpleNamespace:
    """A tiny TSN with a confident trained-looking head, exported; a short video; a one-video-per-class
    folder dataset."""
    root = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    model = tdnzoo.create_model("tsn_test_resnet", num_segments=2, num_classes=3).eval()
    with torch.no_grad():
        model.get_classifier().weight.normal_(0, 3.0)  # scores a freshly initialised head would not give
    model.pretrained_cfg["label_names"] = NAMES
    folder = tdnzoo.save_pretrained(model, root / "tiny")
    video = write_video(root / "clip.mp4", class_frames(1, 16, seed=3))
    data = make_folder_dataset(root / "data", num_classes=3, per_class={"val": 1}, num_frames=12)
    return SimpleNamespace(model=model, folder=folder, video=video, data=data)


def _top_k(predictions) -> list[tuple[str, float]]:
    return [(c.label, c.prob) for c in predictions[0].top_k]


def _cli_top_k(argv: list[str], capsys) -> list[tuple[str, float]]:
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    return [(c["label"], c["prob"]) for c in result["top_k"]]


def _same(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> bool:
    return [g[0] for g in got] == [e[0] for e in expected] and all(
        g[1] == pytest.approx(e[1], abs=1e-6) for g, e in zip(got, expected))


@pytest.fixture
def hub_export(export, tmp_path, monkeypatch) -> str:
    """The export as ``hf-hub:`` in an offline Hugging Face cache laid out by hand."""
    snapshot = tmp_path / "hf-cache" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(export.folder / name, snapshot / name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return f"hf-hub:{REPO}"


def test_predict_with_a_local_export_uses_its_weights(export, capsys):
    expected = _top_k(tdnzoo.predict([export.video], export.model, input_size=64, top_k=3))
    name = f"local-dir:{export.folder}"
    assert _same(_top_k(tdnzoo.predict([export.video], name, input_size=64, top_k=3)), expected)
    argv = ["predict", str(export.video), "--model", name, "--input-size", "64", "--top-k", "3", "--json",
            "--no-progress", "--workers", "0"]
    assert _same(_cli_top_k(argv, capsys), expected)
    fresh = tdnzoo.create_model(name)  # the architecture without the export's weights scores differently
    assert not _same(_top_k(tdnzoo.predict([export.video], fresh, input_size=64, top_k=3)), expected)


def test_predict_with_a_hub_export_uses_its_weights(export, hub_export, capsys):
    expected = _top_k(tdnzoo.predict([export.video], export.model, input_size=64, top_k=3))
    argv = ["predict", str(export.video), "--model", hub_export, "--input-size", "64", "--top-k", "3", "--json",
            "--no-progress", "--workers", "0"]
    assert _same(_cli_top_k(argv, capsys), expected)


def test_eval_with_a_local_export_uses_its_weights(export, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--model", f"local-dir:{export.folder}", "--data-root", str(export.data), "--output", str(out),
            "--input-size", "64", "--workers", "0", "--save-scores", "--no-progress"]
    assert cli_main(argv) == 0
    assert "top-1" in capsys.readouterr().out
    scores = torch.load(out / "scores.pt", weights_only=True)
    dataset = build_eval_dataset(export.model, root=export.data, split="val", views="1x1", input_size=64)
    expected = evaluate(export.model, dataset)
    assert torch.allclose(scores["probs"], expected.probs, atol=1e-6)
    assert json.loads((out / "report.json").read_text())["model"] == f"local-dir:{export.folder}"


def _damaged_copy(export, tmp_path: Path, *, keep_hash: bool) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(export.folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download or copy that stopped early
    if not keep_hash:
        config = json.loads((folder / "config.json").read_text())
        config["pretrained_cfg"]["sha256"] = None
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("keep_hash", "reason"), [(True, "sha256 mismatch"), (False, "corrupt or truncated")])
def test_a_truncated_export_is_one_line_naming_the_file(export, tmp_path, capsys, keep_hash, reason):
    folder = _damaged_copy(export, tmp_path, keep_hash=keep_hash)
    weights = str(folder / "model.safetensors")
    with pytest.raises(tdnzoo.CheckpointError, match=reason) as err:
        tdnzoo.create_model(f"local-dir:{folder}", pretrained=True)
    assert weights in str(err.value)
    for argv in (["predict", str(export.video), "--model", f"local-dir:{folder}", "--no-progress"],
                 ["eval", "--model", f"local-dir:{folder}", "--data-root", str(export.data), "--output",
                  str(tmp_path / "eval")]):
        assert cli_main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"tdnzoo {argv[0]}: error: local-dir:{folder}: ")
        assert weights in lines[0] and reason in lines[0] and "save_pretrained" in lines[0]
