"""The tdnzoo command: list, info, and one-line errors for bad arguments in every command."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

import tdnzoo
from tdnzoo.cli import build_parser, iter_commands, main


def test_list_filters(capsys):
    assert main(["list", "tdn_resnet*"]) == 0
    names = capsys.readouterr().out.split()
    assert "tdn_resnet50" in names and all(n.startswith("tdn_resnet") for n in names)


def test_list_shows_common_models_of_every_kind(capsys):
    from tdnzoo.models.registry import COMMON_CNNS, COMMON_HYBRIDS, COMMON_TRANSFORMERS

    assert main(["list"]) == 0
    names = set(capsys.readouterr().out.split())
    for kind in (COMMON_CNNS, COMMON_HYBRIDS, COMMON_TRANSFORMERS):
        assert kind and {f"tdn_{b}" for b in kind} <= names
    assert {"tdn_vit_small_patch16_224", "tsm_swin_tiny_patch4_window7_224", "tsn_coatnet_0_rw_224"} <= names


def test_common_backbones_belong_to_families_all_three_methods_pass():
    """Each listed backbone's timm family is one the family table (docs/backbones.md) checks with TSN, TSM
    and TDN; its kind there is the kind it is listed under."""
    import timm

    from tdnzoo.models.registry import COMMON_CNNS, COMMON_HYBRIDS, COMMON_TRANSFORMERS

    table = json.loads((Path(__file__).parents[1] / "docs" / "backbones_results.json").read_text())
    families = {r["family"]: r for r in table}
    for kind, names in (("cnn", COMMON_CNNS), ("hybrid", COMMON_HYBRIDS), ("transformer", COMMON_TRANSFORMERS)):
        for name in names:
            family = next(m for m in timm.list_modules() if name in timm.list_models(module=m))
            row = families[family]
            assert all(row[m]["ok"] for m in ("tsn", "tsm", "tdn")), name
            # a family mixes kinds at times (efficientvit): the table's example model stands for it
            assert row["kind"] == kind or family in ("maxxvit", "efficientformer_v2", "metaformer"), (name, row["kind"])


def test_a_wildcard_after_the_method_matches_any_timm_name(capsys):
    import timm

    assert main(["list", "tdn_vit*"]) == 0
    names = capsys.readouterr().out.split()
    assert names and all(n.startswith("tdn_vit") for n in names)
    assert {f"tdn_{b}" for b in timm.list_models("vit*")} == set(names)
    assert tdnzoo.list_models("tdn_vit*") == names  # Python agrees
    assert "tsm_tnt_s_patch16_224" not in tdnzoo.list_models("tsm_tnt*")  # a family TSM refuses is not listed
    assert "tsn_tnt_s_patch16_224" in tdnzoo.list_models("tsn_tnt*")


def test_info_prints_the_model(capsys):
    assert main(["info", "tdn_convnext_atto", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "tdn" and info["backbone"] == "convnext_atto"
    assert info["num_frames"] == 40 and info["params"] > 3_000_000


def test_unknown_name_is_an_error_not_a_traceback(capsys):
    assert main(["info", "tdn_resnt50"]) == 2
    assert "tdn_resnet50" in capsys.readouterr().err


# An invalid value for every command: each must end in one line on stderr, exit status 2, no traceback.
# A new command fails test_every_command_has_an_invalid_case until it gets a case here.
def _invalid_calls(tmp: Path) -> dict[str, list[str]]:
    return {
        "list": ["list", "--pretrained=yes"],  # argparse's own errors take the same one-line form
        "info": ["info", "tdn_test_resnet", "--num-segments", "0"],
        "convert": ["convert", str(tmp / "missing.pth"), str(tmp / "out.safetensors"), "--model", "tsn_test_resnet"],
        "zoo-table": ["zoo-table", "--check", str(tmp / "missing.md")],
        "save-pretrained": ["save-pretrained", "tsn_test_resnet", str(tmp / "export"), "--num-segments", "0"],
        "train": ["train", "--model", "tsn_test_resnet", "--data-root", str(tmp), "--output", str(tmp / "run"),
                  "--epochs", "0"],
        "eval": ["eval", "--model", "tsn_test_resnet", "--checkpoint", str(tmp / "missing.pt"), "--data-root",
                 str(tmp), "--output", str(tmp / "eval")],
        "predict": ["predict", str(tmp / "clip.mp4"), "--model", "tsn_test_resnet", "--top-k", "0"],
        "export onnx": ["export", "onnx", "tsn_test_resnet", str(tmp / "model.onnx"), "--num-segments", "0"],
        "synth": ["synth", "--output", str(tmp / "synth"), "--frames", "0"],
        "flops": ["flops", "tdn_test_resnet", "--size", "-10"],
        "bench": ["bench", "--num-segments", "0", "--output", str(tmp / "bench")],
        "bench speed": ["bench", "speed", "--num-segments", "0", "--output", str(tmp / "bench")],
        "bench breakdown": ["bench", "breakdown", "--num-segments", "0"],
        "bench accuracy": ["bench", "accuracy", "--output", str(tmp / "accuracy"), "--epochs", "0"],
        "bench stream": ["bench", "stream", "--num-segments", "0", "--output", str(tmp / "stream")],
        "bench loader": ["bench", "loader", "--output", str(tmp / "loader"), "--clips", "0"],
        "backbones families": ["backbones", "families", "--write=yes"],
        "backbones table": ["backbones", "table", "--families", "no_such_family"],
    }


COMMANDS = sorted(path for path, _ in iter_commands(build_parser()))


def test_every_command_has_an_invalid_case(tmp_path):
    assert "bench accuracy" in COMMANDS and "export onnx" in COMMANDS  # nested commands are found too
    assert sorted(_invalid_calls(tmp_path)) == COMMANDS


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_arguments_give_one_line_not_a_traceback(command, tmp_path, capsys):
    argv = _invalid_calls(tmp_path).get(command)
    assert argv is not None, f"add an invalid call of 'tdnzoo {command}' to _invalid_calls"
    code, lines = _run(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"tdnzoo {command}: error: "), lines
    assert not list(tmp_path.iterdir()), "a rejected call must not leave files behind"


# Every flag (and positional) that takes a value, with a value it must refuse. Each call is the
# command's minimal call (BASE) plus the flag; positionals replace their value in BASE.
# "{missing}" is a path that does not exist, "{unwritable}" one that cannot be created.
BASE = {
    "list": ["list"],
    "info": ["info", "<name>"],
    "convert": ["convert", "<src>", "<dst>", "--model", "tsn_test_resnet"],
    "zoo-table": ["zoo-table"],
    "save-pretrained": ["save-pretrained", "<model>", "<directory>"],
    "train": ["train", "--model", "tsn_test_resnet", "--data-root", "{data}", "--output", "{tmp}/run", "--epochs", "1"],
    "eval": ["eval", "--model", "tsn_test_resnet", "--data-root", "{data}", "--output", "{tmp}/eval"],
    "predict": ["predict", "<videos>", "--model", "tsn_test_resnet"],
    "export onnx": ["export", "onnx", "<name>", "<out>"],
    "synth": ["synth", "--output", "{tmp}/synth"],
    "flops": ["flops", "<name>"],
    "bench": ["bench", "--output", "{tmp}/bench"],
    "bench speed": ["bench", "speed", "--output", "{tmp}/bench"],
    "bench breakdown": ["bench", "breakdown"],
    "bench accuracy": ["bench", "accuracy", "--output", "{tmp}/accuracy"],
    "bench loader": ["bench", "loader", "--output", "{tmp}/loader"],
    "bench stream": ["bench", "stream", "--output", "{tmp}/stream"],
    "backbones families": ["backbones", "families"],
    "backbones table": ["backbones", "table"],
}
_NUMBERS = {  # the usual offenders: zero or negative counts and sizes, rates that must be positive
    "--num-segments": "0", "--num-classes": "0", "--size": "-10", "--input-size": "0", "--video-size": "0",
    "--batch-size": "0", "--batch": "0", "--workers": "-1", "--top-k": "0", "--epochs": "0", "--lr": "0",
    "--threads": "0", "--rounds": "0", "--train-rounds": "0", "--warmup": "-1", "--frames": "0",
    "--videos-per-class": "0", "--fps": "0", "--seed": "one", "--opset": "0", "--rtol": "-1", "--crf": "-1",
    "--timeline-classes": "0", "--eval-every": "0", "--momentum": "-0.5", "--weight-decay": "-1",
    "--lr-steps": "-1", "--lr-decay": "0", "--min-lr": "-1", "--warmup-epochs": "-1", "--clip-grad-norm": "-1",
    "--dropout": "1.5", "--throughput-batch": "0", "--device": "banana", "--clips": "0", "--seeds": "0",
    "--loader-timeout": "-1", "--segment-fps": "0", "--read-timeout": "0", "--stream-window": "0",
}
_OTHERS = {
    ("convert", "src"): "{missing}.pth", ("convert", "dst"): "{unwritable}.safetensors",
    ("convert", "--model"): "tsn_no_such_net", ("zoo-table", "--write"): "{missing}.md",
    ("zoo-table", "--check"): "{missing}.md", ("info", "name"): "tsn_no_such_net",
    ("save-pretrained", "model"): "tsn_no_such_net", ("save-pretrained", "directory"): "{unwritable}",
    ("save-pretrained", "--checkpoint-path"): "{missing}.pt", ("save-pretrained", "--repo-id"): "not/a/repo id",
    ("train", "--model"): "tsn_no_such_net", ("train", "--data-root"): "{missing}",
    ("train", "--dataset"): "imagenet", ("train", "--train-list"): "{missing}.txt",
    ("train", "--val-list"): "{missing}.txt", ("train", "--train-split"): "no_such_split",
    ("train", "--val-split"): "{missing}", ("train", "--flip-label-map"): "1-2",
    ("train", "--bn"): "sometimes", ("train", "--optimizer"): "adam", ("train", "--schedule"): "linear",
    ("train", "--output"): "{unwritable}", ("train", "--config"): "{missing}.yaml",
    ("train", "--resume"): "{missing}.pt", ("train", "--amp"): "fp8", ("train", "--metrics-format"): "xml",
    ("eval", "--model"): "tsn_no_such_net", ("eval", "--checkpoint"): "{missing}.pt",
    ("eval", "--data-root"): "{missing}", ("eval", "--dataset"): "imagenet", ("eval", "--split"): "no_such_split",
    ("eval", "--list"): "{missing}.txt", ("eval", "--val-list"): "{missing}.txt", ("eval", "--views"): "3by3",
    ("eval", "--amp"): "fp8", ("eval", "--output"): "{unwritable}",
    ("predict", "videos"): "{missing}.mp4", ("predict", "--model"): "tsn_no_such_net",
    ("predict", "--checkpoint"): "{missing}.pt", ("predict", "--views"): "3by3", ("predict", "--labels"): "{missing}.txt",
    ("predict", "--window"): "soon", ("predict", "--stride"): "often", ("predict", "--output"): "{unwritable}",
    ("export onnx", "name"): "tsn_no_such_net", ("export onnx", "out"): "{unwritable}.onnx",
    ("export onnx", "--checkpoint"): "{missing}.pt", ("export onnx", "--exporter"): "tflite",
    ("synth", "--output"): "{unwritable}", ("synth", "--classes"): "no_such_class", ("synth", "--difficulty"): "extreme",
    ("synth", "--splits"): "train=2", ("synth", "--codec"): "gif",
    ("flops", "name"): "tsn_no_such_net",
    ("bench breakdown", "--backbone"): "no_such_net",
    ("bench accuracy", "--output"): "{unwritable}", ("bench accuracy", "--classes"): "no_such_class",
    ("bench accuracy", "--backbone"): "no_such_net", ("bench accuracy", "--difficulty"): "extreme",
    ("bench accuracy", "--methods"): "i3d", ("bench accuracy", "--data-dir"): "{unwritable}",
    ("bench accuracy", "--merge-eval"): "{missing}",
    ("bench accuracy", "--preset"): "huge",
    ("bench loader", "--output"): "{unwritable}", ("bench loader", "--data-dir"): "{unwritable}",
    ("bench loader", "--files"): "h264_8k", ("bench loader", "--threads"): "-1",
    ("bench stream", "--output"): "{unwritable}", ("bench stream", "--models"): "tsm_no_such_net",
    ("predict", "--stream"): "{missing}.mp4", ("predict", "--input-format"): "no_such_demuxer",
    ("backbones table", "--write"): "{missing}.md", ("backbones table", "--json"): "{unwritable}.json",
    ("backbones table", "--families"): "no_such_family", ("backbones table", "--from-json"): "{missing}.json",
}
for _speed in ("bench", "bench speed"):
    _OTHERS.update({
        (_speed, "--output"): "{unwritable}", (_speed, "--methods"): "i3d", (_speed, "--backbones"): "no_such_net",
        (_speed, "--models"): "tsn_no_such_net", (_speed, "--dtype"): "fp8", (_speed, "--official-tdn"): "{missing}",
        (_speed, "--compile"): "sometimes",
    })
# Positionals of BASE, where another flag is under test.
POSITIONALS = {
    ("info", "name"): "tsn_test_resnet", ("convert", "src"): "{missing}.pth", ("convert", "dst"): "{tmp}/out.safetensors",
    ("save-pretrained", "model"): "tsn_test_resnet", ("save-pretrained", "directory"): "{tmp}/export",
    ("predict", "videos"): "{missing}.mp4", ("export onnx", "name"): "tsn_test_resnet",
    ("export onnx", "out"): "{tmp}/model.onnx", ("flops", "name"): "tsn_test_resnet",
}
# Flags any value of which is fine: a pattern that matches nothing lists nothing; a validation split
# that is absent is skipped (as the help says).
ANY_VALUE = {("list", "filter"), ("train", "--val-split")}
# Flags that matter only beside another: list files are read by the list layouts.
COMPANIONS = {("train", "--train-list"): ["--dataset", "sthv1"], ("train", "--val-list"): ["--dataset", "sthv1"],
              ("eval", "--list"): ["--dataset", "sthv1"]}


def _value_flags() -> list[tuple[str, str]]:
    flags = []
    for path, parser in iter_commands(build_parser()):
        for action in parser._actions:
            if action.nargs == 0 or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            long = [flag for flag in action.option_strings if flag.startswith("--")]
            flags.append((path, long[0] if long else action.dest))  # an alias (--window-stride) is the same flag
    return sorted(flags)


VALUE_FLAGS = [f for f in _value_flags() if f not in ANY_VALUE]


def test_every_flag_that_takes_a_value_has_a_bad_value():
    missing = [f for f in VALUE_FLAGS if f not in _OTHERS and f[1] not in _NUMBERS]
    assert not missing, f"add a value each of these must refuse to _OTHERS or _NUMBERS: {missing}"
    assert set(BASE) == set(COMMANDS)


def _base_call(command: str, fill: dict[str, str], bad: tuple[str, str] | None = None) -> list[str]:
    """BASE[command] with its paths filled and its positionals set (the one under test to its bad value)."""
    argv = []
    for part in BASE[command]:
        if part.startswith("<"):
            dest = part.strip("<>")
            part = bad[1] if bad and bad[0] == dest else POSITIONALS[(command, dest)]
        argv.append(part.format(**fill))
    return argv


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A folder dataset of two classes (train and val), for the calls that must get past the data."""
    from tests.datagen import make_folder_dataset

    return make_folder_dataset(tmp_path_factory.mktemp("data"), per_class={"train": 1, "val": 1}, num_frames=8)


@pytest.mark.parametrize("command, flag", VALUE_FLAGS)
def test_every_bad_value_is_one_line(command, flag, data_root, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    fill = {"tmp": str(work), "missing": str(tmp_path / "missing"), "unwritable": "/dev/null/cannot",
            "data": str(data_root)}
    value = _OTHERS.get((command, flag)) or _NUMBERS[flag]
    value = value.format(**fill)
    argv = _base_call(command, fill, bad=(flag, value)) + COMPANIONS.get((command, flag), [])
    if flag.startswith("--"):
        argv += [flag, value]
    code, lines = _run(argv, capsys)
    errors = [line for line in lines if ": error: " in line]
    assert code == 2 and len(errors) == 1 and errors == lines[-1:], lines  # notes before it are allowed
    assert errors[0].startswith(f"tdnzoo {command}: error: "), lines
    assert not list(work.iterdir()), "a rejected call must not leave files behind"


@pytest.mark.parametrize("command", ["train", "eval", "predict", "bench", "bench accuracy"])
def test_a_device_this_machine_lacks_is_one_line(command, monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    fill = {"tmp": str(tmp_path), "missing": str(tmp_path / "missing"), "data": str(tmp_path)}
    code, lines = _run(_base_call(command, fill) + ["--device", "cuda"], capsys)
    assert code == 2 and len(lines) == 1 and "no cuda device" in lines[0], lines


def test_a_closed_output_pipe_ends_quietly(monkeypatch, capsys):
    """`tdnzoo list | head`: the reader is gone; no message, the status of a program SIGPIPE ended."""
    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["list", "tdn_*"]) == 141
    finally:
        monkeypatch.undo()
        stdout.close()  # flushes into /dev/null now: nothing raised
    assert capsys.readouterr().err == ""


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only what a user can fix is turned into a message: an error of ours still surfaces whole."""
    import tdnzoo.cli.models_cmd as models_cmd

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(models_cmd, "run_list", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["list"])


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """The Hub at a closed local port (refused at once, as without network), HF_HUB_OFFLINE unset, an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def published_tag(monkeypatch):
    """A pretrained tag of a tiny model, published on the Hub (with its hash) like the real ones."""
    from tdnzoo.models.pretrained import PRETRAINED_CFGS

    cfg = {"architecture": "tsn_test_resnet", "tag": "offline_test", "method": "tsn", "backbone": "test_resnet",
           "num_classes": 5, "num_segments": 2, "hf_hub_id": "tdnzoo/tsn_test_resnet.offline_test",
           "hf_hub_revision": "main", "hf_hub_filename": "model.safetensors", "sha256": "0" * 64}
    monkeypatch.setitem(PRETRAINED_CFGS, "tsn_test_resnet.offline_test", cfg)
    return "tsn_test_resnet.offline_test"


# huggingface_hub alone retries each file 5 times with back-off (23 s a file, a tag tries two).
@pytest.mark.parametrize("kind", ["hf-hub", "tag"])
def test_no_network_fails_at_once_with_one_line(kind, unreachable_hub, published_tag, tmp_path, capsys, caplog):
    model = "hf-hub:nobody/no-such-model" if kind == "hf-hub" else published_tag
    caplog.set_level(logging.INFO)
    start = time.perf_counter()
    code = main(["predict", str(tmp_path / "clip.mp4"), "--model", model])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("tdnzoo predict: error: ") and "does not answer" in err[0]
    assert "HF_HUB_OFFLINE" in err[0] and "local-dir:" in err[0]
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")], "no retries, no warnings"
    assert elapsed < 15.0  # about 1 s (the model's construction and imports included) on a quiet machine


def test_no_network_still_serves_the_cache(unreachable_hub):
    from tdnzoo.models.hub_download import download_weights

    snapshot = unreachable_hub / "models--org--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_model.bin").write_bytes(b"weights")
    (unreachable_hub / "models--org--cached" / "refs").mkdir()
    (unreachable_hub / "models--org--cached" / "refs" / "main").write_text("0" * 40)
    # the safetensors file is neither on the (unreachable) Hub nor cached: the cached pickle is found
    assert download_weights("org/cached").read_bytes() == b"weights"
