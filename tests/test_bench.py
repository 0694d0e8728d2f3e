"""The speed report: interleaved timing, memory, and every report file from a tiny run."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from tdnzoo.bench import SpeedConfig, run_speed_benchmark, time_interleaved, write_speed_report
from tdnzoo.bench.memory import peak_memory_bytes
from tdnzoo.bench.speed import markdown_table
from tdnzoo.cli import main


def test_timing_is_round_robin_after_warmup():
    calls = []
    timings = time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], rounds=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert [len(t.samples) for t in timings] == [3, 3] and timings[0].median >= 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux mmap flags")
def test_timing_counts_the_page_faults_of_each_call():
    import ctypes

    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    size = 256 * 4096

    def fresh_pages():  # 256 pages the kernel has to hand out on first write
        block = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
        libc.memset(block, 1, size)
        libc.munmap(block, size)

    fresh, quiet = time_interleaved([fresh_pages, lambda: None], rounds=3, warmup=0)
    assert min(fresh.faults) >= 256 and max(quiet.faults) < 16


def test_peak_memory_counts_live_tensors():
    def work():
        a = torch.ones(1024, 1024)  # 4 MiB
        b = a * 2  # 4 MiB more while a is alive
        del a
        return b.sum()

    peak = peak_memory_bytes(work)
    assert 8 * 2**20 <= peak < 9 * 2**20


def test_tiny_report_has_every_file_and_ratios(tmp_path):
    config = SpeedConfig(backbones=("test_resnet",), num_segments=2, size=64, rounds=2, train_rounds=1, warmup=1,
                         throughput_batches=(2,), compile="none")
    result = run_speed_benchmark(config, progress=False)
    paths = write_speed_report(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"tsn_test_resnet", "tsm_test_resnet", "tdn_test_resnet"}
    assert rows["tsn_test_resnet"]["latency_ratio"] == 1.0
    tdn = rows["tdn_test_resnet"]
    assert tdn["latency_ms"] > 0 and tdn["train_step_ms"] > 0 and tdn["throughput_clips_s"]["2"] > 0
    assert tdn["gflops_ratio"] > 1.0 and tdn["activation_peak_mb"] > 0
    assert data["machine"]["torch"] == torch.__version__ and data["settings"]["size"] == 64
    assert data["settings"]["fixed_malloc"] is True
    assert tdn["latency_page_faults"] >= 0 and len(tdn["train_step_page_faults_samples"]) == 1
    md = paths["markdown"].read_text()
    assert "| tdn_test_resnet |" in md and "Machine:" in md and "--official-tdn" in md
    assert data["machine"]["malloc"] in md and "Minor page faults per latency call / training step" in md
    if GLIBC:
        assert data["machine"]["malloc"].startswith("glibc malloc thresholds fixed (mmap 32 MiB")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compiled_bf16_channels_last_report_times_eager_and_compiled_side_by_side(tmp_path):
    # The GPU preset's code path (benchmarks/gpu.sh: cuda, bf16, channels_last, compile, two throughput
    # batches), on the CPU: everything but the device.
    # TSN and TSM: their graphs compile fastest; TDN's compiled forward is pinned by tests/test_compile.py.
    config = SpeedConfig(models=("tsn_test_resnet", "tsm_test_resnet"), num_segments=2, size=64, rounds=1,
                         train_rounds=1, warmup=0, dtype="bf16", channels_last=True, compile=True,
                         throughput_batches=(1, 2))
    with torch._inductor.config.patch(compile_threads=1):
        result = run_speed_benchmark(config, progress=False)
    rows = {(r["model"], r["variant"]): r for r in result.rows}
    assert set(rows) == {(m, v) for m in ("tsn_test_resnet", "tsm_test_resnet") for v in ("eager", "compiled")}
    compiled = rows["tsm_test_resnet", "compiled"]
    assert compiled["latency_ratio"] > 0 and compiled["latency_vs_eager"] > 0 and compiled["train_vs_eager"] > 0
    assert set(compiled["throughput_clips_s"]) == {1, 2}
    assert rows["tsn_test_resnet", "compiled"]["latency_ratio"] == 1.0  # compiled TSN is the compiled baseline
    assert "activation_peak_mb" not in compiled and rows["tsm_test_resnet", "eager"]["activation_peak_mb"] > 0
    table = markdown_table(result)
    assert "| tsm_test_resnet |" in table and "clips/s at batch 2 compiled" in table and "compiled / eager" in table
    assert "train step ms compiled (IQR)" in table


def test_default_report_times_compiled_latency_beside_eager(tmp_path):
    """The default: eager everything, plus the latency of the compiled BN-folded copy, compiled once."""
    config = SpeedConfig(models=("tsn_test_resnet",), num_segments=2, size=64, rounds=2, train_rounds=1, warmup=1,
                         throughput_batches=(2,))
    assert config.compile == "latency"
    with torch._inductor.config.patch(compile_threads=1):
        result = run_speed_benchmark(config, progress=False)
    rows = {r["variant"]: r for r in result.rows}
    assert set(rows) == {"eager", "compiled"}
    eager, compiled = rows["eager"], rows["compiled"]
    assert compiled["latency_ms"] > 0 and compiled["latency_vs_eager"] > 0 and compiled["compile_s"] > 0
    assert "throughput_clips_s" not in compiled and "train_step_ms" not in compiled  # no second compile
    assert eager["throughput_clips_s"][2] > 0 and eager["train_step_ms"] > 0
    table = markdown_table(result)
    lines = [line for line in table.splitlines() if line.startswith("| tsn_test_resnet |")]
    assert len(lines) == 1  # one line per model, its forms side by side
    assert "latency ms eager (IQR) | latency ms compiled (IQR) | compiled / eager" in table
    assert "compiled once per model" in table and "fuse_for_inference" in table


def _noisy_result(spread_ms: float):
    from tdnzoo.bench.speed import SpeedResult, noise_warnings

    row = {"model": "tsn_test_resnet", "variant": "eager", "method": "tsn", "backbone": "test_resnet", "params": 1e6,
           "gflops": 1.0, "latency_ms": 10.0, "latency_spread_ms": spread_ms,
           "latency_samples_ms": [10.0 - spread_ms / 2, 10.0, 10.0, 10.0 + spread_ms / 2]}
    machine = {"cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "torch": "t", "timm": "t", "tdnzoo": "t",
               "python": "3", "load_average_before": [7.5, 8.0, 8.1], "load_average_after": [7.9, 8.0, 8.1]}
    settings = SpeedConfig(models=("tsn_test_resnet",), compile="none", train=False, throughput=False).__dict__
    result = SpeedResult(settings=dict(settings), machine=machine, rows=[row])
    result.warnings = noise_warnings(result.rows, machine)
    return result


def test_a_spread_above_a_tenth_of_the_median_is_flagged_with_the_load(tmp_path, capsys):
    assert not _noisy_result(spread_ms=0.9).warnings  # 9% of the median: fine
    noisy = _noisy_result(spread_ms=3.0)
    assert "load average 7.5, 8.0, 8.1" in noisy.warnings[0] and "not to be trusted" in noisy.warnings[0]
    assert noisy.warnings[1] == "tsn_test_resnet latency 10.0 ms, IQR 3.0 ms (30%)"
    table = markdown_table(noisy)
    assert "**Warning: noisy timings" in table and "- tsn_test_resnet latency 10.0 ms" in table
    paths = write_speed_report(noisy, tmp_path)  # the plot draws the IQR as error bars
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command(tmp_path, capsys):
    argv = ["bench", "--models", "tsn_test_resnet,tdn_test_resnet", "--num-segments", "2", "--size", "64",
            "--rounds", "1", "--warmup", "0", "--no-train", "--no-throughput", "--no-progress", "--output", str(tmp_path),
            "--glibc-malloc-defaults", "--no-compile"]
    assert main(argv) == 0
    assert "| tdn_test_resnet |" in capsys.readouterr().out
    assert (tmp_path / "results.json").is_file() and (tmp_path / "speed.png").is_file()
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["fixed_malloc"] is False and data["machine"]["malloc"] == "malloc as the process had it"


def test_bench_report_on_a_vision_transformer(tmp_path, capsys):
    # FLOPs and the speed report on any model that builds: a ViT (TDN's stream on its patch embedding)
    argv = ["bench", "--models", "tsn_test_vit,tdn_test_vit", "--num-segments", "2", "--size", "160",
            "--rounds", "1", "--warmup", "0", "--no-train", "--no-throughput", "--no-progress", "--output", str(tmp_path),
            "--no-compile"]
    assert main(argv) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert rows["tdn_test_vit"]["gflops"] > rows["tsn_test_vit"]["gflops"] > 0
    assert rows["tdn_test_vit"]["latency_ms"] > 0 and "| tdn_test_vit |" in capsys.readouterr().out


GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Allocates and frees a 24 MiB block three times (as a training step re-allocates a feature map),
# writing every page, and prints the page faults of the 2nd and 3rd rounds.
_FAULTS = '''
import ctypes, resource, sys
from tdnzoo.bench.allocator import fix_malloc_thresholds
if sys.argv[1] == "fixed":
    assert fix_malloc_thresholds() is not None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size, faults = 24 * 2**20, 0
for i in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    libc.memset(block, 1, size)
    if i:
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(block)
print(faults)
'''


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_fixed_malloc_thresholds_reuse_freed_feature_maps():
    """With glibc's dynamic thresholds a re-allocated 24 MiB block comes back as fresh pages (the
    second round faults its 6144 pages in again); with the fixed ones it is reused."""
    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.strip())

    pages = 24 * 2**20 // 4096
    assert faults("default") > pages // 2
    assert faults("fixed") < pages // 20


def test_ratios_pair_rounds_so_drift_cancels():
    from tdnzoo.bench.timing import paired_ratio

    base = [1.0, 2.0, 1.0, 2.0, 1.0]  # the machine halves its speed every other round
    model = [1.2, 2.4, 1.2, 2.4, 1.2]  # always 1.2x the baseline of the same round
    assert paired_ratio(model, base, fallback=0.0) == pytest.approx(1.2)
    assert paired_ratio(model, base[:3], fallback=0.5) == 0.5  # no pairs: the ratio of medians


_STAND_IN_MODELS = '''
"""A stand-in for MCG-NJU/TDN's ops/models.py: its constructor and state_dict layout, tdnzoo's maths."""
import torch
from torch import nn

import tdnzoo

WEIGHTS = __file__.replace("models.py", "official.pth.tar")


class TSN(nn.Module):
    def __init__(self, num_class, num_segments, modality, base_model="resnet50", dropout=0.5, print_spec=True):
        super().__init__()
        self.official = {k.removeprefix("module."): v for k, v in torch.load(WEIGHTS)["state_dict"].items()}
        self.inner = tdnzoo.create_model("tdn_resnet50", num_classes=num_class, num_segments=num_segments,
                                         checkpoint_path=WEIGHTS)

    def state_dict(self, *args, **kwargs):
        return dict(self.official)

    def forward(self, x):  # official input [B, T*5*3, H, W]
        return self.inner(x.view(x.shape[0], -1, 3, *x.shape[-2:]))
'''


def test_official_tdn_is_timed_beside_ours_with_the_same_weights(tmp_path, synth):
    checkout = tmp_path / "TDN"
    (checkout / "ops").mkdir(parents=True)
    (checkout / "ops" / "__init__.py").write_text("")
    (checkout / "ops" / "tdn_net.py").write_text("")
    (checkout / "ops" / "models.py").write_text(_STAND_IN_MODELS)
    torch.save(synth.official_checkpoint("tdn_resnet50", seed=0, num_classes=7), checkout / "ops" / "official.pth.tar")
    config = SpeedConfig(methods=["tsn", "tdn"], backbones=["test_resnet"], num_segments=2, size=64, rounds=2,
                         warmup=0, train=False, throughput=False, num_classes=7, official_tdn=str(checkout))
    result = run_speed_benchmark(config, progress=False)
    official = result.rows[-1]
    assert official["method"] == "tdn-official" and official["latency_ms"] > 0
    assert official["max_relative_logit_difference"] < 1e-5  # the weights went through our converter
    assert official["latency_ratio"] > 0 and official["tdnzoo_tdn_latency_ratio_same_run"] > 0
    assert any("official TDN-R50 timed" in note for note in result.notes)
    with pytest.raises(ValueError, match="ops/models.py"):
        run_speed_benchmark(SpeedConfig(methods=["tsn"], backbones=["test_resnet"], size=64, rounds=1, warmup=0,
                                        train=False, throughput=False, official_tdn=str(tmp_path)), progress=False)


def test_breakdown_times_the_parts_of_a_tdn_model(capsys):
    from tdnzoo.bench.breakdown import time_breakdown

    result = time_breakdown("test_resnet", num_segments=2, size=64, rounds=2, warmup=1, top=3)
    parts = result.parts
    assert parts["S-TDM branch"]["tdn"] > 0 and parts["L-TDM + temporal conv inserts"]["tdn"] > 0
    inside = sum(parts[name]["tdn"] for name in ("S-TDM branch", "L-TDM + temporal conv inserts", "S-TDM fusion"))
    assert inside < parts["whole model"]["tdn"]
    assert len(result.ltdm_ops) == 4 and all(ms >= 0 for _, ms in result.ltdm_ops)  # top 3 + the rest
    assert any(op.startswith("aten::") for op, _ in result.ltdm_ops)
    assert "| S-TDM branch | - |" in result.table() and result.settings["malloc"] in result.table()
    assert main(["bench", "breakdown", "--backbone", "test_resnet", "--num-segments", "2", "--size", "64",
                 "--rounds", "1"]) == 0
    assert "L-TDM + temporal conv inserts" in capsys.readouterr().out


def test_part_timers_leave_the_modules_as_they_were():
    from collections import defaultdict

    from tdnzoo.bench.breakdown import _timed_forwards

    module = torch.nn.ReLU()
    clock = defaultdict(float)
    with _timed_forwards([module], clock, "relu"):
        module(torch.ones(3))
    assert clock["relu"] > 0 and "forward" not in module.__dict__


def test_a_first_run_prints_no_warnings(tmp_path):
    """A fresh process (so that nothing is imported yet, fvcore included) running `tdnzoo bench` shows every
    warning once, and there must be none: the one fvcore's import raises on recent torch is silenced where
    tdnzoo imports it."""
    argv = [sys.executable, "-W", "always", "-m", "tdnzoo", "bench", "--backbones", "test_resnet", "--num-segments",
            "2", "--size", "64", "--rounds", "1", "--train-rounds", "1", "--warmup", "0", "--throughput-batch", "2",
            "--no-progress", "--no-compile", "--output", str(tmp_path / "bench")]
    run = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr and "warn" not in run.stderr.lower(), run.stderr
