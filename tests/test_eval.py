"""Evaluation: metrics, softmax averaging over CLIPSxCROPS views, reports, and the README commands
(fine-tune then evaluate a folder of videos) on tiny generated data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdnzoo import create_model
from tdnzoo.cli import main as cli_main
from tdnzoo.eval import EvalResult, build_eval_dataset, evaluate, published_numbers, write_report

from .datagen import make_folder_dataset

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(
        tmp_path_factory.mktemp("videos") / "data", num_classes=3, per_class={"train": 4, "val": 2}, num_frames=16
    )


def test_metrics_from_scores():
    probs = torch.tensor([
        [0.70, 0.20, 0.10, 0.00, 0.00, 0.00, 0.00],  # true 0, right
        [0.01, 0.20, 0.19, 0.18, 0.17, 0.16, 0.09],  # true 0, ranked last: wrong even in top-5
        [0.00, 0.90, 0.10, 0.00, 0.00, 0.00, 0.00],  # true 1, right
        [0.50, 0.10, 0.40, 0.00, 0.00, 0.00, 0.00],  # true 2, predicted 0, second: top-5 only
    ])
    result = EvalResult(probs=probs, labels=torch.tensor([0, 0, 1, 2]), views=(1, 1))
    assert result.top1 == 50.0 and result.top5 == 75.0
    assert result.per_class_accuracy == {0: 50.0, 1: 100.0, 2: 0.0}
    assert result.mean_class_accuracy == pytest.approx(50.0)
    expected = torch.zeros(7, 7, dtype=torch.long)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 0] = 1, 1, 1, 1
    assert torch.equal(result.confusion, expected)


def test_views_are_averaged_after_softmax(data):
    torch.manual_seed(0)
    model = create_model("tsn_test_resnet", num_segments=2, num_classes=3).eval()
    with torch.no_grad():
        model.get_classifier().weight.mul_(300)  # confident, view-dependent scores
    ds = build_eval_dataset(model, root=data, split="val", views="2x3", input_size=56)
    views, _ = ds[0]
    assert views.shape == (6, 2, 3, 64, 64)  # 2 clips x 3 full-resolution crops of the 64 side
    assert not torch.equal(views[0], views[3])  # the second clip starts later in each segment
    result = evaluate(model, ds, batch_size=2)
    assert result.num_videos == 6 and result.views == (2, 3)
    with torch.no_grad():
        expected = torch.stack([model(ds[i][0]).softmax(dim=1).mean(dim=0) for i in range(len(ds))])
        mean_logits = torch.stack([model(ds[i][0]).mean(dim=0) for i in range(len(ds))])
    torch.testing.assert_close(result.probs, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(result.probs, mean_logits.softmax(dim=1), atol=1e-6)  # not logit averaging
    assert torch.equal(result.labels, torch.tensor(ds.labels))


def test_report_puts_published_numbers_beside_measured(tmp_path):
    probs = torch.eye(3)[[0, 1, 2, 2]]
    result = EvalResult(probs=probs, labels=torch.tensor([0, 1, 2, 1]), views=(1, 1), class_names=["a", "b", "c"])
    cfg = {"reported": {"top1": 52.3, "top5": 80.6, "views": "1x1", "source": "https://example.org/tdn"}}
    paths = write_report(result, tmp_path / "r", model_name="tdn_resnet50.sthv1_8f", pretrained_cfg=cfg,
                         details={"dataset": "sthv1"})
    report = json.loads(paths["json"].read_text())
    assert report["top1"] == 75.0 and report["published"]["top1"] == 52.3
    assert report["delta"]["top1"] == pytest.approx(75.0 - 52.3)
    assert report["per_class_accuracy"] == {"a": 100.0, "b": 50.0, "c": 100.0}
    md = paths["markdown"].read_text()
    assert "| measured | 75.00 | 100.00 | 83.33 | 1x1 |" in md
    assert "| published | 52.30 | 80.60 | | 1x1 |" in md and "https://example.org/tdn" in md
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = write_report(result, tmp_path / "p", model_name="m", pretrained_cfg={})
    assert "No published numbers" in plain["markdown"].read_text()
    assert published_numbers({"reported_top1": 76.6, "test_views": (10, 3)}) == {"top1": 76.6, "views": "10x3"}
    assert published_numbers({"num_classes": 400}) == {}


def test_readme_commands_fine_tune_then_evaluate_a_folder(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main([
        "train", "--model", "tdn_resnet18", "--data-root", str(data), "--output", str(run), "--num-segments", "2",
        "--input-size", "64", "--epochs", "2", "--batch-size", "4", "--lr", "0.02", "--workers", "0", "--no-progress",
    ]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    best = max(history, key=lambda h: h["val_acc1"])
    capsys.readouterr()
    # evaluate the best checkpoint; 1x1 views are the training-time validation, so top-1 must agree
    assert cli_main([
        "eval", "--checkpoint", str(run / "best.pt"), "--data-root", str(data), "--views", "1x1",
        "--input-size", "64", "--output", str(tmp_path / "eval"), "--workers", "0", "--no-progress",
    ]) == 0
    assert "top-1" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["model"] == "tdn_resnet18" and report["num_videos"] == 6 and report["views"] == "1x1"
    assert report["top1"] == pytest.approx(best["val_acc1"])
    assert set(report["per_class_accuracy"]) <= {"class_0", "class_1", "class_2"}
    assert (tmp_path / "eval" / "confusion.png").is_file() and (tmp_path / "eval" / "report.md").is_file()
    # Kinetics-style 10x3 views run the same way
    assert cli_main([
        "eval", "--model", "tdn_resnet18", "--checkpoint", str(run / "last.pt"), "--data-root", str(data),
        "--views", "2x3", "--input-size", "64", "--output", str(tmp_path / "eval3"), "--workers", "0", "--no-progress",
    ]) == 0
    assert json.loads((tmp_path / "eval3" / "report.json").read_text())["views"] == "2x3"


def test_distributed_eval_gathers_every_video_once(data, tmp_path):
    """2 gloo processes under torchrun score each video once, in order, as one process does."""
    train_args = ["train", "--model", "tsn_test_resnet", "--data-root", str(data), "--output", str(tmp_path / "run"),
                  "--num-segments", "2", "--input-size", "64", "--epochs", "1", "--batch-size", "4", "--workers", "0",
                  "--no-progress"]
    assert cli_main(train_args) == 0
    eval_args = ["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data-root", str(data), "--views", "1x3",
                 "--input-size", "64", "--batch-size", "2", "--workers", "0", "--no-progress", "--save-scores"]
    assert cli_main(eval_args + ["--output", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tdnzoo",
         *eval_args, "--output", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "scores.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "scores.pt", weights_only=True)
    assert one["probs"].shape == two["probs"].shape == (6, 3)  # 3 videos per process, no padding
    torch.testing.assert_close(one["probs"], two["probs"], atol=1e-6, rtol=1e-5)
    assert torch.equal(one["labels"], two["labels"])
    assert json.loads((tmp_path / "two" / "report.json").read_text())["processes"] == 2


def test_eval_needs_weights(data, tmp_path, capsys):
    assert cli_main(["eval", "--model", "tdn_resnet18", "--data-root", str(data), "--output", str(tmp_path)]) == 2
    assert "no weights to evaluate" in capsys.readouterr().err
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "no.pt"), "--data-root", str(data),
                     "--output", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="views"):
        build_eval_dataset(create_model("tsn_test_resnet", num_segments=2, num_classes=3), root=data, views="3x2")
