"""A trained model's classes and clip settings travel: train -> eval -> save-pretrained -> predict -> ONNX.

The tiny model is trained at 2 segments and 64 px with named classes, none of which is a default
(8 segments, 224 px, ``class_<i>``), and no later command is told any of them again.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tdnzoo
from tdnzoo.cli import main as cli_main
from tdnzoo.export.onnx import read_onnx_metadata
from tdnzoo.models.description import override, read_description

from .datagen import make_folder_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["jump", "spin", "wave"]  # sorted: the folder dataset's class order
SEGMENTS, SIZE = 2, 64


def _named_dataset(root: Path) -> Path:
    make_folder_dataset(root, num_classes=3, per_class={"train": 1, "val": 1}, num_frames=12)
    for split in ("train", "val"):
        for k, name in enumerate(NAMES):
            (root / split / f"class_{k}").rename(root / split / name)
    return root


def test_classes_and_clip_settings_travel_from_training_to_every_export(tmp_path, capsys):
    data, run = _named_dataset(tmp_path / "data"), tmp_path / "run"
    checkpoint = run / "best.pt"
    assert cli_main(["train", "--model", "tdn_test_resnet", "--data-root", str(data), "--output", str(run),
                     "--num-segments", str(SEGMENTS), "--input-size", str(SIZE), "--epochs", "1", "--batch-size", "3",
                     "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()

    # create_model(checkpoint_path=) alone: the checkpoint's segments, size and names, not 8 / 224 / class_<i>.
    model = tdnzoo.create_model("tdn_test_resnet", checkpoint_path=checkpoint)
    assert (model.num_segments, model.num_classes) == (SEGMENTS, 3)
    assert model.pretrained_cfg["input_size"] == (3, SIZE, SIZE) and list(model.pretrained_cfg["label_names"]) == NAMES

    # eval: no --input-size, --num-segments or --views.
    assert cli_main(["eval", "--checkpoint", str(checkpoint), "--data-root", str(data), "--output",
                     str(tmp_path / "eval"), "--workers", "0", "--no-progress"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert (report["num_segments"], report["input_size"], report["views"]) == (SEGMENTS, SIZE, "1x1")
    assert sorted(report["per_class_accuracy"]) == NAMES
    capsys.readouterr()

    # save-pretrained: config.json and the card record them.
    export = tmp_path / "export"
    assert cli_main(["save-pretrained", "tdn_test_resnet", str(export), "--checkpoint-path", str(checkpoint)]) == 0
    config = json.loads((export / "config.json").read_text())
    assert config["label_names"] == NAMES and config["num_segments"] == SEGMENTS
    assert config["description"] == {
        "architecture": "tdn_test_resnet", "num_classes": 3, "class_names": NAMES, "num_segments": SEGMENTS,
        "frames_per_segment": 5, "input_size": SIZE, "mean": list(model.pretrained_cfg["mean"]),
        "std": list(model.pretrained_cfg["std"]), "test_views": "1x1",
    }
    card = (export / "README.md").read_text()
    assert "Classes (3, in index order): `jump`, `spin`, `wave`." in card and f"cropped to {SIZE}x{SIZE}" in card
    capsys.readouterr()

    # predict from the export: the trained names at the trained segments and size.
    video = data / "val" / "spin" / "1_0.mp4"
    assert cli_main(["predict", str(video), "--model", f"local-dir:{export}", "--json", "--no-progress",
                     "--top-k", "3", "--workers", "0"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (doc["num_segments"], doc["input_size"]) == (SEGMENTS, SIZE) and err == ""
    assert sorted(c["label"] for c in doc["results"][0]["top_k"]) == NAMES
    # a flag still wins, and says so in one line
    assert cli_main(["predict", str(video), "--model", f"local-dir:{export}", "--json", "--no-progress",
                     "--workers", "0", "--input-size", "96"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["input_size"] == 96
    assert err.strip() == f"tdnzoo predict: input size 96 (from --input-size; the export local-dir:{export} says {SIZE})"

    # ONNX from the export: the metadata carries the names, the layout and the description.
    onnx_path = tmp_path / "model.onnx"
    assert cli_main(["export", "onnx", f"local-dir:{export}", str(onnx_path)]) == 0
    meta = read_onnx_metadata(onnx_path)
    assert meta["label_names"] == NAMES and meta["num_segments"] == SEGMENTS
    assert meta["input_shape"] == [1, SEGMENTS * 5, 3, SIZE, SIZE] and meta["image_size"] == [SIZE, SIZE]
    assert meta["description"] == config["description"]
    assert "label names in its metadata: jump, spin, wave" in capsys.readouterr().out

    # and every copy predicts what the trained model predicts
    clip = torch.randn(1, SEGMENTS * 5, 3, SIZE, SIZE)
    loaded = tdnzoo.create_model(f"local-dir:{export}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip), model.eval()(clip))


def test_checkpoints_from_before_the_description_still_describe_their_model(tmp_path):
    """A training checkpoint without the ``description`` entry is read from its other fields; a flag's note names both values."""
    path = tmp_path / "old.pt"
    torch.save({"format": "tdnzoo-train", "architecture": "tsn_test_resnet", "num_classes": 3, "class_names": NAMES,
                "args": {"input_size": 96, "num_segments": 4}, "model_args": {"num_segments": 4, "frames_per_segment": 1}},
               path)
    desc = read_description(path)
    assert (desc.class_names, desc.num_segments, desc.frames_per_segment, desc.input_size) == (tuple(NAMES), 4, 1, 96)
    changed, notes = override(desc, input_size=(128, "--input-size"), num_segments=(4, "--num-segments"),
                              num_classes=(5, "--num-classes"))
    assert notes == ["input size 128 (from --input-size; the checkpoint old.pt says 96)",
                     "classes 5 (from --num-classes; the checkpoint old.pt says 3)"]
    assert changed.class_names is None  # names of 3 classes do not name 5
    assert read_description(tmp_path / "official.pth").to_dict() == {}  # not there, or not tdnzoo's: nothing known
