"""The public API as the README documents it: every ``tdnzoo.<name>`` the README uses exists as written,
``tdnzoo.count_flops`` works from the top level, and ``import tdnzoo`` stays light."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tdnzoo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_names() -> list[str]:
    """Dotted names after ``tdnzoo.`` in the README's code blocks and inline code, and ``from tdnzoo... import``."""
    code = re.findall(r"```[^\n]*\n(.*?)```", README, re.S)
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    code += re.findall(r"`([^`\n]+)`", prose)
    names = set()
    for text in code:
        names.update(re.findall(r"\btdnzoo\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", text))
        for module, imported in re.findall(r"\bfrom tdnzoo((?:\.\w+)*) import ([\w, ]+)", text):
            names.update(f"{module.lstrip('.')}.{n.strip()}".lstrip(".") for n in imported.split(","))
    return sorted(names)


def _resolve(dotted: str) -> object:
    """``tdnzoo.<dotted>`` as Python finds it: attributes, importing submodules on the way."""
    obj: object = tdnzoo
    for part in dotted.split("."):
        if not hasattr(obj, part) and isinstance(obj, type(tdnzoo)):
            try:
                importlib.import_module(f"{obj.__name__}.{part}")
            except ModuleNotFoundError:
                pass
        obj = getattr(obj, part)
    return obj


README_NAMES = _readme_names()


def test_the_readme_uses_the_api():
    assert {"create_model", "count_flops", "predict", "save_pretrained", "list_models"} <= set(README_NAMES)


@pytest.mark.parametrize("name", README_NAMES)
def test_every_name_in_the_readme_exists(name):
    try:
        _resolve(name)
    except AttributeError:
        pytest.fail(f"README.md uses tdnzoo.{name}, which does not exist")


def test_count_flops_from_the_top_level():
    from tdnzoo import count_flops
    from tdnzoo.bench.flops import count_flops as bench_count_flops

    assert count_flops is bench_count_flops and "count_flops" in tdnzoo.__all__
    gflops = tdnzoo.count_flops(tdnzoo.create_model("tsn_test_resnet", num_segments=2, num_classes=3), input_size=64)
    twice = tdnzoo.count_flops(tdnzoo.create_model("tsn_test_resnet", num_segments=4, num_classes=3), input_size=64)
    assert gflops > 0 and twice == pytest.approx(2 * gflops)  # TSN: one view costs per segment
    with pytest.raises(AttributeError, match="no_such_name"):
        tdnzoo.no_such_name  # noqa: B018


def test_every_public_name_exists():
    assert [n for n in tdnzoo.__all__ if not hasattr(tdnzoo, n)] == []


def test_import_stays_light():
    """``predict`` and ``count_flops`` load their stacks on first use, not on ``import tdnzoo``."""
    code = ("import sys, tdnzoo; heavy = [m for m in ('tdnzoo.prediction', 'tdnzoo.bench', 'tdnzoo.eval', "
            "'tdnzoo.train', 'fvcore', 'av') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_warnings_from_tdnzoo_fail_the_tests():
    """pyproject.toml turns warnings attributed to tdnzoo's modules into errors, so a new one fails CI."""
    import warnings

    with pytest.raises(UserWarning, match="new warning"):
        warnings.warn_explicit("a new warning", UserWarning, "datasets.py", 1, module="tdnzoo.data.datasets")
    with warnings.catch_warnings(record=True):  # a third-party module's warning is not ours to fail on
        warnings.warn_explicit("theirs", UserWarning, "other.py", 1, module="somewhere.else")
