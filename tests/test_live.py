"""``tdnzoo predict --stream``: live labels of a generated video piped through standard input."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import tdnzoo
from tdnzoo.cli import main
from tdnzoo.prediction import live, resolve_view_spec
from tdnzoo.prediction.live import LivePredictor, LiveSource, sample_segments

from .conftest import ROOT, randomize_statistics, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, FPS, SIZE = 30, 10, 64


def _video(frames: int = FRAMES) -> bytes:
    """An MPEG-TS stream (what `ffmpeg ... -f mpegts pipe:1` writes): a bar moving to the right."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((SIZE, SIZE, 3), 40, np.uint8)
            image[:, (4 * i) % SIZE] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A causal TDN export (4 segments, 3 classes) and the model itself."""
    torch.manual_seed(0)
    model = randomize_statistics(tdnzoo.create_model("tdn_test_resnet", num_classes=3, num_segments=4, causal=True))
    path = tmp_path_factory.mktemp("live") / "causal"
    tdnzoo.save_pretrained(model, path)
    return path


def _predict(export: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tdnzoo", "predict", "--stream", "-", "--model", f"local-dir:{export}",
         "--input-size", str(SIZE), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kwargs,
    )


def test_piped_video_is_labelled_segment_by_segment(export):
    process = _predict(export, "--json", "--segment-fps", "2", "--top-k", "2")
    out, err = process.communicate(_video(), timeout=120)
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    # 3 s at 2 segments/s: segments of 5 frames starting at 0, 0.5, ..., 2.5 s.
    assert [p["time"] for p in lines] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [p["segments"] for p in lines] == [1, 2, 3, 4, 4, 4]  # the label averages the last 4 segments
    for p in lines:
        assert p["label"] == p["top_k"][0]["label"] and len(p["top_k"]) == 2 and p["latency_ms"] > 0
    assert f"standard input ended after {FRAMES} frames, 6 steps" in err.decode()


@pytest.fixture
def stalled_stdin(monkeypatch):
    """Standard input a pipe holding the start of a stream, its writer left open: no more data, no end."""
    read_end, write_end = os.pipe()
    os.write(write_end, _video()[:5000])
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "rb"))
    yield
    sys.stdin.close()
    os.close(write_end)


def test_a_stalled_pipe_ends_at_the_read_timeout(export, stalled_stdin, capsys):
    assert main(["predict", "--stream", "-", "--model", f"local-dir:{export}", "--read-timeout", "1"]) == 1
    assert "no data from standard input for 1 s" in capsys.readouterr().err


def test_ctrl_c_stops_the_stream_cleanly(export, stalled_stdin, capsys, monkeypatch):
    # SIGINT arrives while the reader waits for data, inside PyAV's read callback, where a
    # KeyboardInterrupt used to be lost. Sent from the reader itself: the handler is in place by then.
    read = live._DeadlineReader.read

    def interrupted_read(self, size=-1):
        os.kill(os.getpid(), signal.SIGINT)
        return read(self, size)

    monkeypatch.setattr(live._DeadlineReader, "read", interrupted_read)
    handler = signal.getsignal(signal.SIGINT)
    assert main(["predict", "--stream", "-", "--model", f"local-dir:{export}", "--read-timeout", "30"]) == 130
    assert "stopped (Ctrl-C)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def test_live_steps_equal_the_causal_model_on_the_sampled_segments(export, tmp_path):
    path = tmp_path / "clip.ts"
    path.write_bytes(_video())
    model = tdnzoo.create_model(f"local-dir:{export}", pretrained=True).eval()
    spec = resolve_view_spec(model, views="1x1", input_size=SIZE)
    source = LiveSource(str(path), timeout=5)
    segments = list(sample_segments(source.frames(), segment_fps=2, frames_per_segment=5))[:4]
    predictor = LivePredictor(model, spec, ["a", "b", "c"], top_k=3)
    for start, frames in segments:
        predictor.step(frames, start)
    frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for _, fs in segments for f in fs])
    clip = spec.transform()(frames.permute(0, 3, 1, 2)).unsqueeze(0)
    with torch.no_grad():
        expected = model(clip)  # the mean of the 4 segments' logits
    assert relative_error(predictor.streamer.prediction(), expected) <= 1e-5


def test_bad_sources_and_models_end_with_a_message(export, tmp_path, capsys):
    garbage = tmp_path / "garbage.ts"
    garbage.write_bytes(os.urandom(4000))
    assert main(["predict", "--stream", str(garbage), "--model", f"local-dir:{export}"]) == 1
    assert "cannot open" in capsys.readouterr().err
    offline = tmp_path / "offline"
    tdnzoo.save_pretrained(tdnzoo.create_model("tsm_test_resnet", num_classes=3, num_segments=4), offline)
    assert main(["predict", "--stream", str(garbage), "--model", f"local-dir:{offline}"]) == 2
    assert "not causal" in capsys.readouterr().err
