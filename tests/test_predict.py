"""Prediction on generated video files: views as the cfg says, batching, unreadable files, a trained
tiny model, sliding windows (CSV/JSON/PNG) and the ``tdnzoo predict`` command."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tdnzoo
from tdnzoo import create_model
from tdnzoo.cli import main as cli_main
from tdnzoo.data import load_views, read_frames
from tdnzoo.prediction import (
    ViewScorer,
    dense_clip_indices,
    parse_span,
    predict_windows,
    resolve_view_spec,
    window_bounds,
)

from .datagen import class_frames, write_video

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Two short clips per class, a garbage '.mp4', and a long video: class 0 for 32 frames, then class 1."""
    root = tmp_path_factory.mktemp("predict")
    out = {f"{label}_{i}": write_video(root / f"{label}_{i}.mp4", class_frames(label, 20, seed=500 + 10 * label + i))
           for label in (0, 1) for i in range(2)}
    out["bad"] = root / "bad.mp4"
    out["bad"].write_bytes(b"this is not a video" * 50)
    out["long"] = write_video(root / "long.mp4", np.concatenate([class_frames(0, 32, seed=7), class_frames(1, 32, seed=8)]))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A tiny TSN whose classifier was trained (linear probe, 100 Adam steps) to tell class 0 from class 1
    on 6 generated videos, and the same model saved as a tdnzoo training checkpoint."""
    root = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    model = create_model("tsn_test_resnet", num_segments=2, num_classes=2).eval()
    spec = resolve_view_spec(model, views="1x1", input_size=64)
    clips, labels = [], []
    for label in (0, 1):
        for i in range(3):
            clips.append(spec.load(write_video(root / f"{label}_{i}.mp4", class_frames(label, 16, seed=100 + 10 * label + i)))[0])
            labels.append(label)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(torch.cat(clips)), pre_logits=True)
    head = model.get_classifier()
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(head(feats), torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.requires_grad_(False)
    checkpoint = root / "best.pt"
    torch.save({  # what tdnzoo.train writes (tdnzoo/train/state.py), minus optimizer state
        "format": "tdnzoo-train", "version": 1, "model": model.state_dict(), "epoch": 1,
        "args": {"model": "tsn_test_resnet", "input_size": 64, "model_kwargs": {}}, "architecture": "tsn_test_resnet",
        "model_name": "tsn_test_resnet", "model_args": {"num_segments": 2}, "num_classes": 2,
        "class_names": ["red_bar", "green_bar"],
    }, checkpoint)
    return model, checkpoint


def test_views_follow_the_pretrained_cfg(videos):
    model = create_model("tsn_test_resnet", num_segments=2, num_classes=3)
    # a Kinetics-style tag: 10 clips x 3 full-resolution crops of 256 after resizing to 256
    model.pretrained_cfg.update(test_clips=10, test_crops=3, test_crop_size=256, test_resize=256,
                                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    spec = resolve_view_spec(model)
    assert (spec.views, spec.num_views, spec.crop_size, spec.full_res, spec.mean) == ("10x3", 30, 256, True, (0.5,) * 3)
    assert resolve_view_spec(model, views="1x1").crop_size == 224  # --views overrides, the crop is the input size
    model.pretrained_cfg["test_crop_size"] = 224
    assert resolve_view_spec(model).crop_size == 224  # a tag tested with 3 crops of the input size
    # the same frames and pixels as evaluation (load_views) for a plain cfg
    plain = create_model("tsn_test_resnet", num_segments=2, num_classes=3)
    spec = resolve_view_spec(plain, views="2x3", input_size=64)
    views, num_frames = spec.load(videos["0_0"])
    assert num_frames == 20 and views.shape == (6, 2, 3, 73, 73)
    assert torch.equal(views, load_views(videos["0_0"], plain, views="2x3", input_size=64))
    # TSM's dense Kinetics sampling: 8 frames 8 apart in a 64-frame window, 10 windows spread over the video
    clips = dense_clip_indices(100, 8, num_clips=10)
    assert [c[0] for c in clips] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert clips[1] == [4, 12, 20, 28, 36, 44, 52, 60]
    assert dense_clip_indices(20, 8, num_clips=2) == [[0, 8, 16, 4, 12, 0, 8, 16]] * 2  # wraps round short videos
    plain.pretrained_cfg["test_sampling"] = "dense"
    assert resolve_view_spec(plain, views="10x1").clip_indices(100) == dense_clip_indices(100, 2, num_clips=10)
    assert resolve_view_spec(plain, views="10x1").clip_indices(100)[1] == [4, 36]  # 2 segments: 32 frames apart


def test_predict_batches_views_and_skips_unreadable_files(videos, caplog):
    torch.manual_seed(0)
    model = create_model("tsn_test_resnet", num_segments=2, num_classes=3).eval()
    with torch.no_grad():
        model.get_classifier().weight.mul_(300)  # confident, view-dependent scores
    paths = [videos["0_0"], videos["bad"], videos["1_0"]]
    # 6 views per video, 4 per forward pass: one video's views straddle two batches
    results = tdnzoo.predict(paths, model, views="2x3", input_size=64, top_k=10, batch_size=4, workers=1)
    assert [r.video for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, True]
    assert "bad.mp4" in results[1].error and results[1].to_dict() == {"video": str(paths[1]), "error": results[1].error}
    assert "skipping" in caplog.text and "bad.mp4" in caplog.text
    spec = resolve_view_spec(model, views="2x3", input_size=64)
    for r, path in zip([results[0], results[2]], [paths[0], paths[2]]):
        assert float(r.probs.sum()) == pytest.approx(1.0, abs=1e-5)
        assert len(r.top_k) == 3 and [c.label for c in r.top_k] == [f"class_{c.index}" for c in r.top_k]
        assert [c.prob for c in r.top_k] == sorted((c.prob for c in r.top_k), reverse=True)
        with torch.no_grad():  # softmax of each view, then the mean: as evaluation does
            expected = model(spec.load(path)[0]).softmax(dim=1).mean(dim=0)
        torch.testing.assert_close(r.probs, expected, atol=1e-5, rtol=1e-5)
        d = r.to_dict()
        assert d["num_frames"] == 20 and d["views"] == "2x3" and d["top_k"][0]["rank"] == 1
    # the scorer packs any number of views per item into fixed batches
    scorer = ViewScorer(model, batch_size=5)
    items = {k: torch.randn(v, 2, 3, 64, 64) for k, v in {"a": 3, "b": 1, "c": 7}.items()}
    done = [kp for k, v in items.items() for kp in scorer.push(k, v)] + scorer.flush()
    assert [k for k, _ in done] == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(done[2][1], model(items["c"]).softmax(1).mean(0), atol=1e-5, rtol=1e-5)


def test_trained_model_predicts_the_class_of_new_videos(videos, trained):
    model, _ = trained
    results = tdnzoo.predict([videos["0_0"], videos["1_0"], videos["0_1"], videos["1_1"]], model, input_size=64,
                             views="1x1", labels=["red_bar", "green_bar"], top_k=2)
    assert [r.label for r in results] == ["red_bar", "green_bar", "red_bar", "green_bar"]
    assert all(r.top_k[0].prob > 0.7 for r in results)


def test_sliding_windows_follow_the_video_and_write_csv_json_png(videos, trained, tmp_path):
    model, _ = trained
    scores = predict_windows(videos["long"], model, window=16, stride=8, input_size=64, labels=["red", "green"])
    assert scores.bounds == window_bounds(64, 16, 8) == [(s, s + 16) for s in range(0, 49, 8)]
    assert scores.fps == 8.0 and scores.probs.shape == (7, 2)
    torch.testing.assert_close(scores.probs.sum(dim=1), torch.ones(7))
    best = scores.probs.argmax(dim=1).tolist()
    for (start, end), b in zip(scores.bounds, best):
        if end <= 32:
            assert b == 0, scores.bounds  # windows inside the first half: class 0
        elif start >= 32:
            assert b == 1, scores.bounds  # inside the second half: class 1
    segments = scores.segments()
    assert segments[0]["label"] == "red" and segments[-1]["label"] == "green"
    assert segments[0]["start_time"] == 0.0 and segments[-1]["end_time"] == 8.0
    paths = scores.save(tmp_path, k=2, model="probe")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 7 and rows[0]["top1_label"] == "red" and rows[-1]["top1_label"] == "green"
    assert (rows[1]["start_frame"], rows[1]["end_frame"], rows[1]["start_time"], rows[1]["end_time"]) == ("8", "24", "1.0", "3.0")
    assert float(rows[0]["top1_prob"]) + float(rows[0]["top2_prob"]) == pytest.approx(1.0, abs=1e-5)
    doc = json.loads(paths["json"].read_text())
    assert doc["model"] == "probe" and doc["num_windows"] == 7 and len(doc["windows"]) == 7
    assert doc["windows"][-1]["top_k"][0]["label"] == "green" and doc["window_frames"] == 16
    assert paths["png"].read_bytes()[:8] == PNG and paths["png"].stat().st_size > 5000


def test_window_scores_equal_the_model_on_each_window_clip(videos):
    """The one-pass decoder and per-frame transforms give what the model sees on the window's frames
    read directly (TDN: 5 frames per segment; three crops; the tail window ends at the last frame)."""
    torch.manual_seed(0)
    model = create_model("tdn_test_resnet", num_segments=2, num_classes=3).eval()
    with torch.no_grad():
        model.get_classifier().weight.mul_(100)
    scores = predict_windows(videos["long"], model, window=24, stride=15, views="1x3", input_size=64, batch_size=2)
    assert scores.bounds == [(0, 24), (15, 39), (30, 54), (40, 64)]
    spec = resolve_view_spec(model, views="1x3", input_size=64)
    transform = spec.transform()
    with torch.no_grad():
        for w, (start, end) in enumerate(scores.bounds):
            (clip,) = spec.clip_indices(end - start)
            frames = read_frames(videos["long"], [start + i for i in clip], layout="TCHW")
            expected = model(transform(frames)).softmax(dim=1).mean(dim=0)  # [3, 10, 3, 73, 73] views
            torch.testing.assert_close(scores.probs[w], expected, atol=1e-5, rtol=1e-4)


def test_spans_and_window_counts():
    assert parse_span(64, None) == 64 and parse_span("64", None) == 64 and parse_span("10f", None) == 10
    assert parse_span("2s", 30.0) == 60 and parse_span("1.5s", 8) == 12
    with pytest.raises(ValueError, match="frame rate is unknown"):
        parse_span("2s", None)
    for bad in ("0", "-3", "abc", "0s"):
        with pytest.raises(ValueError):
            parse_span(bad, 25.0)
    assert window_bounds(10, 40, 20) == [(0, 10)]  # shorter than a window: one window
    assert window_bounds(90, 40, 20) == [(0, 40), (20, 60), (40, 80), (50, 90)]  # the tail is covered
    for total, window, stride in [(1000, 64, 32), (1001, 64, 32), (64, 64, 1), (300, 50, 7)]:
        bounds = window_bounds(total, window, stride)
        expected = (total - window) // stride + 1 + int((total - window) % stride != 0)
        assert len(bounds) == expected and bounds[-1][1] == total
        assert all(e - s == window for s, e in bounds)


def test_cli_predict_from_a_training_checkpoint(videos, trained, tmp_path, capsys):
    _, checkpoint = trained
    # no --model: the checkpoint names its model, classes and input size
    code = cli_main(["predict", str(videos["0_0"]), str(videos["bad"]), str(videos["1_1"]), "--checkpoint",
                     str(checkpoint), "--top-k", "2", "--json", "--workers", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    assert doc["model"] == "tsn_test_resnet" and doc["views"] == "1x1" and doc["input_size"] == 64
    assert [r.get("error") is not None for r in doc["results"]] == [False, True, False]
    assert [r["top_k"][0]["label"] for r in doc["results"] if "top_k" in r] == ["red_bar", "green_bar"]
    assert f"skipped {videos['bad']}: cannot open video" in err and "could not read 1 of 3 videos" in err
    assert "predict: 100%" in err  # the progress bar
    # a table, with names from --labels
    labels = tmp_path / "labels.txt"
    labels.write_text("left\nright\n")
    assert cli_main(["predict", str(videos["1_0"]), "--checkpoint", str(checkpoint), "--labels", str(labels),
                     "--no-progress", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "right" in out.splitlines()[-2] and "rank" in out and "1x1 views" in out
    # every file unreadable: exit status 1; a label file of the wrong length or no weights: 2
    assert cli_main(["predict", str(videos["bad"]), "--checkpoint", str(checkpoint), "--no-progress"]) == 1
    assert json.loads(capsys.readouterr().out or "{}") == {}
    labels.write_text("a\nb\nc\n")
    assert cli_main(["predict", str(videos["0_0"]), "--checkpoint", str(checkpoint), "--labels", str(labels)]) == 2
    assert "3 label names" in capsys.readouterr().err
    assert cli_main(["predict", str(videos["0_0"]), "--model", "tsn_test_resnet"]) == 2
    assert "no weights" in capsys.readouterr().err


def test_cli_sliding_windows(videos, trained, tmp_path, capsys):
    _, checkpoint = trained
    out_dir = tmp_path / "windows"
    code = cli_main(["predict", str(videos["long"]), str(videos["bad"]), "--checkpoint", str(checkpoint),
                     "--window", "2s", "--stride", "1s", "--output", str(out_dir), "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and "bad.mp4" in captured.err
    doc = json.loads(captured.out)
    ok, bad = doc["results"]
    assert bad["video"] == str(videos["bad"]) and "error" in bad
    assert ok["num_windows"] == 7 and ok["segments"][0]["label"] == "red_bar" and ok["segments"][-1]["label"] == "green_bar"
    files = {k: Path(v) for k, v in ok["files"].items()}
    assert files["csv"] == out_dir / "long.windows.csv" and len(files["csv"].read_text().splitlines()) == 1 + 7
    assert json.loads(files["json"].read_text())["stride_frames"] == 8
    assert files["png"].read_bytes()[:8] == PNG
    # the text summary: runs of windows with the same best class
    assert cli_main(["predict", str(videos["long"]), "--checkpoint", str(checkpoint), "--sliding",
                     "--output", str(out_dir), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "red_bar" in text and "green_bar" in text and "7 windows of 16 frames" in text
    assert cli_main(["predict", str(videos["long"]), "--checkpoint", str(checkpoint), "--window", "two"]) == 2
    assert "--window must be a number of frames" in capsys.readouterr().err
