"""The tdnzoo command: list, info, and clear errors."""
from __future__ import annotations

import json

from tdnzoo.cli import main


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
