"""The tdnzoo command: list, info, and one-line errors for bad arguments in every command."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from tdnzoo.cli import build_parser, iter_commands, main


def test_list_filters(capsys):
    assert main(["list", "tdn_resnet*"]) == 0
    names = capsys.readouterr().out.split()
    assert "tdn_resnet50" in names and all(n.startswith("tdn_resnet") for n in names)


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
        "flops": ["flops", "tdn_test_resnet", "--num-segments", "0"],
        "bench": ["bench", "--num-segments", "0", "--output", str(tmp / "bench")],
        "bench speed": ["bench", "speed", "--num-segments", "0", "--output", str(tmp / "bench")],
        "bench breakdown": ["bench", "breakdown", "--num-segments", "0"],
        "bench accuracy": ["bench", "accuracy", "--output", str(tmp / "accuracy"), "--epochs", "0"],
        "backbones families": ["backbones", "families", "--write=yes"],
        "backbones table": ["backbones", "table", "--families", "no_such_family"],
    }


COMMANDS = sorted(path for path, _ in iter_commands(build_parser()))


def test_every_command_has_an_invalid_case(tmp_path):
    assert "bench accuracy" in COMMANDS and "export onnx" in COMMANDS  # nested commands are found too
    assert sorted(_invalid_calls(tmp_path)) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_arguments_give_one_line_not_a_traceback(command, tmp_path, capsys):
    argv = _invalid_calls(tmp_path).get(command)
    assert argv is not None, f"add an invalid call of 'tdnzoo {command}' to _invalid_calls"
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"tdnzoo {command}: error: "), err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir()), "a rejected call must not leave files behind"


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
