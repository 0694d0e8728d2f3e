"""The accuracy benchmark: a tiny end-to-end run writes every report file with consistent numbers, reruns resume,
the reversal/appearance metrics are right, and `tdnzoo eval` reports merge in with their published numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tdnzoo.bench import accuracy as ab
from tdnzoo.cli import main as cli_main
from tdnzoo.eval import EvalResult, write_report

from .conftest import torch_threads

CLASSES = ["move_left_to_right", "move_right_to_left", "appearance_checkerboard"]
TINY = ["--classes", ",".join(CLASSES), "--videos-per-class", "4", "--frames", "8", "--num-segments", "2",
        "--size", "64", "--backbone", "test_resnet", "--epochs", "1", "--batch-size", "3", "--workers", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acc") / "report"
    with torch_threads(1):
        assert cli_main(["bench", "accuracy", "--output", str(out), *TINY]) == 0
    return out


def test_tiny_run_writes_every_report_file(bench, capsys):
    files = {p.name for p in bench.iterdir()}
    assert {"results.json", "report.md", "learning_curves.png", "confusion_tsn.png", "confusion_tsm.png",
            "confusion_tdn.png"} <= files
    for png in ("learning_curves.png", "confusion_tdn.png"):
        assert (bench / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = json.loads((bench / "results.json").read_text())
    s = res["settings"]
    assert s["classes"] == sorted(CLASSES) and s["backbone"] == "test_resnet" and s["seed"] == 0
    assert s["val_videos"] == 3 and s["train_videos"] == 9 and s["num_segments"] == 2
    # Flipping a clip turns left-to-right into right-to-left: the label map says so.
    assert s["flip_label_map"] == {"move_left_to_right": "move_right_to_left", "move_right_to_left": "move_left_to_right"}
    assert res["machine"]["cpu_count"] >= 1 and res["versions"]["torch"] == torch.__version__
    assert res["total_cpu_s"] > 0 and res["total_s"] > res["generation_s"] > 0
    assert [m["method"] for m in res["models"]] == ["tsn", "tsm", "tdn"]
    by = {m["method"]: m for m in res["models"]}
    for m in res["models"]:
        assert m["model"] == f"{m['method']}_test_resnet"
        conf = torch.tensor(m["confusion"])
        assert conf.shape == (3, 3) and int(conf.sum()) == 3 == m["val_videos"]
        # top-1 is the confusion matrix's diagonal, the group accuracies sum up to it (2 pair videos + 1 appearance)
        assert m["top1"] == pytest.approx(100.0 * float(conf.diag().sum()) / 3)
        assert m["reversal_videos"] == 2 and m["appearance_videos"] == 1
        assert m["top1"] == pytest.approx((2 * m["reversal_top1"] + m["appearance_top1"]) / 3)
        assert m["top5"] == 100.0  # 3 classes: every label is in the top 5
        assert m["params_m"] > 0 and m["gflops_per_view"] > 0
        assert len(m["history"]) == 1 and m["history"][0]["val_acc1"] is not None
        assert m["train_time_s"] == pytest.approx(m["history"][0]["epoch_time_s"])
        assert Path(m["checkpoint"]).is_file()
    # TDN reads 5 frames per segment and adds difference branches: more computation than TSN at the same input.
    assert by["tdn"]["num_frames"] == 10 and by["tsn"]["num_frames"] == 2
    assert by["tdn"]["gflops_per_view"] > by["tsn"]["gflops_per_view"]

    md = (bench / "report.md").read_text()
    for name in ("tsn_test_resnet", "tsm_test_resnet", "tdn_test_resnet"):
        assert f"| {name} | " in md
    assert "direction (chance 50)" in md and "test_resnet from scratch" in md and "seed" in md
    assert "![learning curves](learning_curves.png)" in md


def test_rerun_resumes_and_merges_a_real_tdnzoo_eval_report(bench, tmp_path, capsys):
    # A real `tdnzoo eval` report on the generated data, with the benchmark's own TSM checkpoint.
    ckpt = bench / "runs" / "tsm" / "last.pt"
    assert cli_main(["eval", "--checkpoint", str(ckpt), "--data-root", str(bench / "data"), "--output",
                     str(tmp_path / "eval"), "--workers", "0", "--no-progress", "--input-size", "64"]) == 0
    mtime = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    # Same settings again: nothing is trained again (the checkpoints stay), and the eval rows join the report.
    assert cli_main(["bench", "accuracy", "--output", str(bench), *TINY, "--merge-eval", str(tmp_path / "eval")]) == 0
    assert ckpt.stat().st_mtime_ns == mtime
    assert "report:" in capsys.readouterr().out
    res = json.loads((bench / "results.json").read_text())
    assert len(res["models"]) == 3 and len(res["models"][1]["history"]) == 1
    (row,) = res["real_datasets"]
    evaluated = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert row["top1"] == evaluated["top1"] and row["num_videos"] == 3 and row["views"] == "1x1"
    assert row["published_top1"] is None  # a user-trained checkpoint has no published numbers
    md = (bench / "report.md").read_text()
    assert "## Real datasets" in md and f"| {evaluated['top1']:.1f} |" in md


def _fake_eval_report(folder: Path) -> dict:
    """A report written by tdnzoo.eval.write_report for a model with published numbers."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    result = EvalResult(probs=probs, labels=torch.tensor([0, 1, 2, 2]), views=(1, 1), class_names=["a", "b", "c"])
    cfg = {"reported": {"top1": 52.3, "top5": 80.6, "views": "1x1", "source": "TDN paper, Table 6"}}
    write_report(result, folder, model_name="tdn_resnet50.sthv1_8f", pretrained_cfg=cfg,
                 details={"dataset": "sthv1", "num_segments": 8})
    return json.loads((folder / "report.json").read_text())


def test_only_merge_puts_published_numbers_beside_measured_ones(tmp_path, capsys):
    report = _fake_eval_report(tmp_path / "eval")
    out = tmp_path / "merged"
    assert cli_main(["bench", "accuracy", "--output", str(out), "--only-merge", "--merge-eval",
                     str(tmp_path / "eval" / "report.json")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["models"] == []
    (row,) = res["real_datasets"]
    assert row["top1"] == pytest.approx(75.0) == report["top1"] and row["dataset"] == "sthv1"
    assert row["published_top1"] == 52.3 and row["published_top5"] == 80.6
    md = (out / "report.md").read_text()
    assert "| tdn_resnet50.sthv1_8f | sthv1 | 1x1 | 4 | 75.0 | 100.0 | 52.3 | 80.6 | +22.7 |" in md
    assert "TDN paper, Table 6" in md
    # Merging the same report again replaces its row instead of repeating it.
    assert cli_main(["bench", "accuracy", "--output", str(out), "--only-merge", "--merge-eval", str(tmp_path / "eval")]) == 0
    assert len(json.loads((out / "results.json").read_text())["real_datasets"]) == 1


def test_group_metrics_by_hand():
    names = ["appear", "appearance_dots", "disappear"]
    manifest = {"reversal_pairs": [["appear", "disappear"]], "appearance_classes": ["appearance_dots"],
                "reverse_of": {"appear": "disappear", "disappear": "appear", "appearance_dots": "appearance_dots"}}
    probs = torch.tensor([
        [0.5, 0.1, 0.4],  # appear: right, and above its partner
        [0.35, 0.5, 0.15],  # appear: wrong (appearance_dots) but still above its partner disappear -> direction right
        [0.6, 0.1, 0.3],  # disappear: wrong, partner wins
        [0.1, 0.8, 0.1],  # appearance_dots: right
        [0.4, 0.3, 0.3],  # appearance_dots: wrong
    ])
    got = ab.class_group_metrics(probs, torch.tensor([0, 0, 2, 1, 1]), names, manifest)
    assert got["reversal_top1"] == pytest.approx(100 / 3) and got["reversal_direction"] == pytest.approx(200 / 3)
    assert got["appearance_top1"] == 50.0 and got["reversal_videos"] == 3 and got["appearance_videos"] == 2
    none = ab.class_group_metrics(probs[:1], torch.tensor([0]), names, {**manifest, "appearance_classes": []})
    assert none["appearance_top1"] is None and none["appearance_videos"] == 0


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="methods must be a non-empty list"):
        ab.run_accuracy_benchmark(tmp_path / "x", methods=("tsn", "i3d"))
    with pytest.raises(ValueError, match=r"PRESET\+BLOCK"):
        ab.run_accuracy_benchmark(tmp_path / "x", methods=("tsn+flow",))
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        ab.run_accuracy_benchmark(tmp_path / "x", seeds=0)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        ab.run_accuracy_benchmark(tmp_path / "x", epochs=0)
    with pytest.raises(ValueError, match="no tdnzoo eval report"):
        ab.run_accuracy_benchmark(tmp_path / "x", merge_eval=[tmp_path / "missing"])
    (tmp_path / "other.json").write_text('{"top1": 3}')
    assert cli_main(["bench", "accuracy", "--output", str(tmp_path / "y"), "--only-merge", "--merge-eval",
                     str(tmp_path / "other.json")]) == 2
    assert "is not a `tdnzoo eval` report: missing model, top5, views, num_videos" in capsys.readouterr().err
    assert cli_main(["bench", "accuracy", "--output", str(tmp_path / "z"), "--classes", "jumping"]) == 2
    assert "unknown synthetic class 'jumping'" in capsys.readouterr().err
    assert not (tmp_path / "x" / "data").exists()  # nothing generated before the arguments were checked


def test_compositions_and_seeds_give_means_spreads_and_what_each_block_adds(tmp_path):
    out = tmp_path / "ablation"
    with torch_threads(1):
        assert cli_main(["bench", "accuracy", "--output", str(out), *TINY, "--methods", "tsn,tsn+stdm", "--seeds", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["seeds"] == 2 and res["settings"]["methods"] == ["tsn", "tsn+stdm"]
    # Seed-major: every seed runs all methods, each run in its own folder, on the one dataset.
    assert [(m["method"], m["seed"]) for m in res["models"]] == [("tsn", 0), ("tsn+stdm", 0), ("tsn", 1), ("tsn+stdm", 1)]
    assert {m["model"] for m in res["models"]} == {"tsn_test_resnet", "tsn+stdm_test_resnet"}
    for m in res["models"]:
        assert Path(m["checkpoint"]).parent == out / "runs" / m["method"] / f"seed{m['seed']}"
    assert {m["num_frames"] for m in res["models"] if m["method"] == "tsn+stdm"} == {10}  # S-TDM: 5 frames a segment
    for method in ("tsn", "tsn+stdm"):
        runs = [m["top1"] for m in res["models"] if m["method"] == method]
        top1 = res["summary"][method]["top1"]
        assert res["summary"][method]["runs"] == 2 and top1["mean"] == pytest.approx(sum(runs) / 2)
        assert top1["std"] == pytest.approx(abs(runs[0] - runs[1]) / 2 ** 0.5)
    md = (out / "report.md").read_text()
    assert "Mean ± sample standard deviation over 2 seeds" in md and "| tsn+stdm | 2 |" in md
    assert "tsn+stdm_test_resnet (seed 1)" in md and "- adding S-TDM to tsn (tsn+stdm vs tsn):" in md


def test_composition_effects_from_numbers():
    def run(method, seed, rev, direction):
        return {"method": method, "seed": seed, "top1": rev, "top5": 100.0, "reversal_top1": rev,
                "reversal_direction": direction, "appearance_top1": 50.0, "train_time_s": 1.0}

    models = [run("tsn", 0, 10.0, 50.0), run("tsn", 1, 12.0, 52.0), run("tsn+ltdm", 0, 40.0, 70.0),
              run("tsn+ltdm", 1, 44.0, 74.0), run("tdn", 0, 11.0, 51.0), run("tdn", 1, 13.0, 55.0)]
    results = {"models": models, "summary": ab.summarize_runs(models)}
    effects = {(e["method"], e["base"]): e for e in ab.composition_effects(results)}
    assert set(effects) == {("tsn+ltdm", "tsn"), ("tdn", "tsn")}  # tdn and tsn+ltdm differ by two blocks
    ltdm = effects["tsn+ltdm", "tsn"]
    assert ltdm["base"] == "tsn" and ltdm["change"] == "adding L-TDM"
    assert ltdm["reversal_top1"]["delta"] == pytest.approx(31.0) and ltdm["reversal_top1"]["beyond_spread"]
    assert ltdm["reversal_direction"]["delta"] == pytest.approx(21.0)
    tdn = effects["tdn", "tsn"]  # TDN against TSN: +1 on reversal with spreads of 1.4 each: within the noise
    assert tdn["reversal_top1"]["delta"] == pytest.approx(1.0) and tdn["reversal_top1"]["beyond_spread"] is False
