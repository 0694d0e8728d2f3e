"""Training on tiny generated videos: loss goes down, resume is bit-identical, DDP matches one process,
bad data stops the run before it starts and corrupt videos are counted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tdnzoo import create_model
from tdnzoo.cli import main as cli_main
from tdnzoo.cli.train_cmd import config_from_args
from tdnzoo.train import (
    MetricsLog,
    TrainConfig,
    TrainingError,
    apply_bn_mode,
    build_optimizer,
    build_scheduler,
    load_training_checkpoint,
    train,
)
from tdnzoo.train.optim import LrFactor

from .datagen import make_folder_dataset

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(
        tmp_path_factory.mktemp("videos") / "data", num_classes=2, per_class={"train": 4, "val": 1}, num_frames=12
    )


def tiny(data: Path, output: Path, **kw) -> TrainConfig:
    values = dict(
        model="tsn_test_resnet", data_root=str(data), output=str(output), num_segments=2, input_size=64, epochs=2,
        batch_size=4, workers=0, lr=0.05, lr_steps=[], progress=False,
    )
    values.update(kw)
    return TrainConfig(**values)


def test_two_epochs_reduce_the_loss_and_write_a_loadable_checkpoint(data, tmp_path, capsys):
    result = train(tiny(data, tmp_path / "run"))
    first, second = result.history
    assert second["train_loss"] < first["train_loss"]
    for key in ("train_loss", "train_acc1", "train_acc5", "lr", "clips_per_s", "val_acc1", "val_loss", "skipped_videos"):
        assert key in second
    assert [r["epoch"] for r in MetricsLog(tmp_path / "run").read()] == [1, 2]
    assert "epoch 2/2 | loss" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]

    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)  # plain data only
    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "rng", "args", "architecture", "model_args"):
        assert key in ckpt
    assert ckpt["epoch"] == 2 and ckpt["architecture"] == "tsn_test_resnet" and ckpt["class_names"] == ["class_0", "class_1"]
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
    # the zoo factory loads it directly (tdnzoo.load_checkpoint unwraps 'model')
    model = create_model("tsn_test_resnet", num_segments=2, checkpoint_path=result.last_checkpoint).eval()
    assert model.num_classes == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k


def test_kill_and_resume_equals_an_uninterrupted_run(data, tmp_path):
    cfg = dict(model="tsm_resnet18", deterministic=True, epochs=2, lr_steps=[1.5], dropout=0.5)
    full = train(tiny(data, tmp_path / "full", **cfg))

    class Killed(Exception):
        pass

    def kill(epoch: int, step: int) -> None:
        if epoch == 1 and step == 0:  # in the middle of the second epoch, after one optimizer step
            raise Killed

    with pytest.raises(Killed):
        train(tiny(data, tmp_path / "cut", **cfg), step_callback=kill)
    assert load_training_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = train(tiny(data, tmp_path / "cut", resume=True, **cfg))

    a = load_training_checkpoint(full.last_checkpoint)
    b = load_training_checkpoint(resumed.last_checkpoint)
    assert b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert [r["epoch"] for r in MetricsLog(tmp_path / "cut").read()] == [1, 2]  # no duplicate epoch records
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_seeded_training_is_the_same_with_or_without_progress_bars_and_workers(tmp_path, capsys):
    """Same seed, same losses, exactly: the progress bars and the loading processes draw nothing from
    the training's generators (tqdm(loader) used to open a throwaway loader iterator, which drew a
    seed from torch's global generator and so changed every dropout mask after it)."""
    # Frame folders: a worker forked after PyAV decoded in this process can hang in swscale's
    # inherited thread pool (a decoding matter, not this test's).
    data = make_folder_dataset(tmp_path / "frames", num_classes=2, per_class={"train": 4, "val": 1},
                               num_frames=12, frame_folders=True)
    losses = {}
    for progress, workers in ((False, 0), (True, 0), (False, 1), (True, 1)):
        for run in range(2):  # each way twice: a setting that does not repeat itself proves nothing
            out = tmp_path / f"progress{progress}_workers{workers}_{run}"
            result = train(tiny(data, out, progress=progress, workers=workers, dropout=0.5))
            losses[progress, workers, run] = [(r["train_loss"], r["val_loss"]) for r in result.history]
            bars = capsys.readouterr().err
            assert ("epoch 2/2" in bars) == progress  # the bars ran (and only when asked for)
    reference = losses[False, 0, 0]
    assert len(reference) == 2 and reference[0] != reference[1]
    assert {k: v for k, v in losses.items() if v != reference} == {}


def test_an_existing_run_is_never_overwritten(data, tmp_path):
    train(tiny(data, tmp_path / "run", epochs=1))
    with pytest.raises(TrainingError, match="--resume"):
        train(tiny(data, tmp_path / "run", epochs=1))


def test_corrupt_video_is_skipped_and_reported(data, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data, root)
    bad = root / "train" / "class_0" / "0_1.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    with pytest.warns(UserWarning, match="0_1.mp4"):
        result = train(tiny(root, tmp_path / "run", epochs=1))
    record = result.history[0]
    assert record["skipped_videos"] == 1 and record["skipped_paths"] == [str(bad)]
    assert record["train_clips"] == 8  # the epoch went on with replacements
    assert f"skipped 1 unreadable video(s): {bad}" in capsys.readouterr().out


def test_bad_data_stops_before_training(data, tmp_path, capsys):
    base = ["train", "--model", "tsn_test_resnet", "--output", str(tmp_path / "run"), "--num-segments", "2"]
    assert cli_main(base + ["--data-root", str(tmp_path / "nowhere")]) == 2
    assert "data root not found" in capsys.readouterr().err
    root = tmp_path / "data"
    shutil.copytree(data, root)
    (root / "train" / "class_9").mkdir()
    assert cli_main(base + ["--data-root", str(root)]) == 2
    assert "class_9 is empty" in capsys.readouterr().err
    (tmp_path / "k.txt").write_text("train/class_0/0_0.mp4 0\ntrain/class_1/1_0.mp4 400\n")
    assert cli_main(base + ["--data-root", str(data), "--dataset", "kinetics", "--train-list", str(tmp_path / "k.txt")]) == 2
    assert "k.txt:2: label 400 is outside the class range [0, 400)" in capsys.readouterr().err
    assert cli_main(base + ["--data-root", str(data), "--dataset", "kinetics", "--train-list", str(tmp_path / "no.txt")]) == 2
    assert "list file not found" in capsys.readouterr().err
    assert cli_main(["train", "--model", "tsn_test_resnet", "--data-root", str(data)]) == 2
    assert "output is required" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written


def test_ddp_two_processes_match_one_process(data, tmp_path):
    """2-process gloo DDP under torchrun applies the same SGD updates (so the same gradients) as one
    process on the same global batch. BatchNorm is frozen and dropout off: both would otherwise differ
    per process by design."""
    args = ["--model", "tsn_test_resnet", "--data-root", str(data), "--num-segments", "2", "--input-size", "64",
            "--epochs", "1", "--batch-size", "4", "--workers", "0", "--lr", "0.1", "--lr-steps", "9",
            "--bn", "frozen", "--dropout", "0", "--deterministic", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tdnzoo",
         "train", *args, "--output", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1/1") == 1  # only rank 0 reports
    assert cli_main(["train", *args, "--output", str(tmp_path / "one")]) == 0

    ddp = load_training_checkpoint(tmp_path / "ddp" / "last.pt")
    one = load_training_checkpoint(tmp_path / "one" / "last.pt")
    assert ddp["args"]["batch_size"] == one["args"]["batch_size"] == 4 and ddp["metrics"]["steps"] == 2
    torch.manual_seed(0)  # the initial weights of both runs
    init = create_model("tsn_test_resnet", num_segments=2, num_classes=2, drop_rate=0.0).state_dict()
    moved = max(float((one["model"][k] - init[k]).abs().max()) for k in init if init[k].is_floating_point())
    gap = max(float((one["model"][k] - ddp["model"][k]).abs().max()) for k in init if init[k].is_floating_point())
    assert moved > 1e-3 and gap < 1e-6, (moved, gap)
    assert abs(ddp["metrics"]["train_loss"] - one["metrics"]["train_loss"]) < 1e-6
    assert ddp["metrics"]["val_clips"] == one["metrics"]["val_clips"] == 2  # gathered, each video once


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last(data, tmp_path, amp):
    result = train(tiny(data, tmp_path / amp, epochs=1, amp=amp, channels_last=True, optimizer="adamw", lr=1e-3,
                        schedule="cosine", warmup_epochs=0.5, metrics_format="csv"))
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    ckpt = load_training_checkpoint(result.last_checkpoint)
    assert bool(ckpt["scaler"]) == (amp == "fp16")  # the fp16 gradient scaler state is saved
    assert ckpt["optimizer"]["param_groups"][0]["weight_decay"] == 0.05
    assert (tmp_path / amp / "metrics.csv").read_text().startswith("epoch,train_loss")


def test_schedules_param_groups_and_bn_modes():
    step = LrFactor("step", 100, milestones=[30, 45, 55])
    assert [step(s) for s in (0, 29, 30, 45, 55, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.001, 0.001])
    warm = LrFactor("cosine", 100, warmup_steps=10, warmup_factor=0.1)
    assert warm(0) == pytest.approx(0.1) and warm(5) == pytest.approx(0.55) and warm(10) == pytest.approx(1.0)
    assert warm(55) == pytest.approx(0.5) and warm(100) == pytest.approx(0.0)

    model = create_model("tsn_test_resnet", num_segments=2, num_classes=3)
    opt = build_optimizer(model, name="sgd", lr=0.1, weight_decay=5e-4)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() <= 1 for p in no_decay["params"])
    sched = build_scheduler(opt, schedule="step", epochs=4, steps_per_epoch=10, lr_steps=[2, 3])
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01) and lrs[30] == pytest.approx(0.001)

    model.train()
    apply_bn_mode(model, "partial")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms[0].training and norms[0].weight.requires_grad
    assert not any(m.training or m.weight.requires_grad for m in norms[1:])


def test_config_file_flags_and_recipe_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"model": "tdn_resnet50", "epochs": 60, "batch-size": 64,
                                                     "data_root": "d", "output": "o"}))
    from tdnzoo.cli import build_parser

    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "10"])
    cfg = config_from_args(args).resolved()
    assert (cfg.model, cfg.epochs, cfg.batch_size) == ("tdn_resnet50", 10, 64)  # the flag beats the file
    assert cfg.lr == pytest.approx(0.01) and cfg.weight_decay == 5e-4 and cfg.clip_grad_norm == 20
    assert cfg.lr_steps == pytest.approx([5, 7.5, 55 / 6])
    k = TrainConfig(model="m", data_root="d", output="o", dataset="kinetics", batch_size=128, epochs=100).resolved()
    assert k.lr == pytest.approx(0.02) and k.weight_decay == 1e-4 and k.lr_steps == pytest.approx([50, 75, 90])
    with pytest.raises(ValueError, match="unknown training options: colour"):
        TrainConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="divide evenly"):
        TrainConfig(model="m", data_root="d", output="o", batch_size=3).resolved(world_size=2)
    with pytest.raises(ValueError, match="amp must be one of"):
        TrainConfig(amp="fp8")
    assert json.loads(json.dumps(cfg.to_dict()))["model"] == "tdn_resnet50"


def test_pretrained_initialisations_reach_the_model(data, tmp_path, monkeypatch):
    """--pretrained loads the tag's weights (head reset for the new classes); --pretrained-backbone asks
    timm for ImageNet weights. Loading itself is the Hub code's job: here it is replaced by local files."""
    import timm

    import tdnzoo.models.builder as builder
    import tdnzoo.models.pretrained as pretrained

    source = create_model("tsn_test_resnet", num_segments=2, num_classes=5)
    monkeypatch.setitem(pretrained.PRETRAINED_CFGS, "tsn_test_resnet.fake_k5",
                        {"num_classes": 5, "num_segments": 2, "dataset": "fake"})
    loaded = []

    def fake_load(model, cfg):
        model.load_state_dict(source.state_dict())
        loaded.append(model.num_classes)

    monkeypatch.setattr(builder, "load_pretrained", fake_load)
    seen = {}

    def spy(*args, pretrained=False, **kwargs):
        seen["pretrained"] = pretrained
        return real_create(*args, pretrained=False, **kwargs)  # no download in tests

    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model", spy)
    result = train(tiny(data, tmp_path / "ft", model="tsn_test_resnet.fake_k5", pretrained=True, epochs=1, lr=1e-9))
    assert loaded == [5] and seen["pretrained"] is False
    ckpt = load_training_checkpoint(result.last_checkpoint)
    assert ckpt["num_classes"] == 2 and ckpt["model_name"] == "tsn_test_resnet.fake_k5"
    # lr ~ 0: the backbone is still the pretrained one, the classifier is new
    stem = "backbone.conv1.0.weight"
    assert torch.allclose(ckpt["model"][stem], source.state_dict()[stem], atol=1e-6)
    train(tiny(data, tmp_path / "imagenet", pretrained_backbone=True, epochs=1))
    assert seen["pretrained"] is True
