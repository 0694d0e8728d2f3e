"""``tdnzoo bench loader`` on tiny generated inputs: every backend reads the same clips, the report
compares them (the real sizes run in the benchmark, not here)."""
from __future__ import annotations

import json

import torch

from tdnzoo.bench.loader import LoaderFile, run_loader_benchmark, write_loader_report
from tdnzoo.cli import main as cli_main
from tdnzoo.data import read_frames


def test_loader_benchmark_times_every_backend_on_the_same_clips(tmp_path):
    files = (LoaderFile("h264_tiny", "h264", 64, 48, 20), LoaderFile("vp9_tiny", "vp9", 64, 48, 12),
             LoaderFile("jpeg_tiny", "jpeg", 32, 24, 12))
    asked: list[tuple[str, list[int], int]] = []

    def other(path: str, indices: list[int], threads: int) -> torch.Tensor:  # another decoder, same frames
        asked.append((path, indices, threads))
        return read_frames(path, indices)

    results = run_loader_benchmark(tmp_path / "data", files=files, threads=(1, 0), clips=2, rounds=2,
                                   backends={"tdnzoo": lambda p, i, t: read_frames(p, i), "other": other})
    keys = {(r.file, r.sampling, r.threads, r.backend) for r in results}
    assert ("h264_tiny", "TDN 8x5", "all cores", "other") in keys and ("vp9_tiny", "TSN 8x1", "1 thread", "tdnzoo") in keys
    assert ("jpeg_tiny", "TSN 8x1", "1 thread", "tdnzoo-torchvision") in keys  # frame folders: tdnzoo's two decoders
    assert not any(r.backend == "other" and r.file == "jpeg_tiny" for r in results)
    assert all(r.clips_per_s > 0 and len(r.rounds) == 2 for r in results)
    tdn = [indices for path, indices, _ in asked if path.endswith(".mp4") and len(indices) == 40]
    assert tdn and all(max(i) < 20 for i in tdn)  # 8 segments x 5 frames inside the video
    report = write_loader_report(results, tmp_path / "report", command="cmd").read_text()
    assert "## TDN 8x5" in report and "| h264_tiny | 1 thread |" in report and "tdnzoo / fastest other" in report
    assert len(json.loads((tmp_path / "report" / "loader.json").read_text())) == len(results)


def test_cli_bench_loader(tmp_path, capsys):
    assert cli_main(["bench", "loader", "--output", str(tmp_path), "--files", "jpeg_100p", "--clips", "1",
                     "--rounds", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "jpeg_100p" in out and (tmp_path / "loader.md").is_file()
