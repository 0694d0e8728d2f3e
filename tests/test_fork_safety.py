"""Decoding in forked workers after the parent has decoded: what hung DataLoader workers forever; and a
worker that stops answering anyway becomes an error naming it and its video (training saves first).

A forked process inherits the parent's memory but none of its threads. PyAV >= 18 caches an RGB
converter (swscale, with slice threads) per thread, and the parent's frame threads and torch's OpenMP
pool cross too; each made forked workers wait forever on threads that are not there (the issue's
stack: ``pthread_cond_wait`` <- ``avpriv_slicethread_execute`` <- ``sws_scale_frame``). The videos
are real-size H.264 (640x360, one keyframe in 250 frames, as cameras and encoders write them), short
in frames so that the tests stay fast. Every wait here has a deadline: a hang fails the test.
"""
from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import tdnzoo
from tdnzoo import create_model
from tdnzoo.bench.loader import write_frame_folder, write_video
from tdnzoo.data import VideoDataset, VideoRecord, open_video, read_frames
from tdnzoo.data.workers import WorkerTimeoutError, watched_loader
from tdnzoo.train import TrainConfig, load_training_checkpoint, train

from .conftest import torch_threads
from .datagen import class_frames, make_folder_dataset
from .datagen import write_video as write_test_video

DEADLINE_S = 60  # far above what a healthy worker needs here (well under a second per clip)
CLIPS = [[0, 5, 10, 15], [1, 1, 14, 3], [15, 0, 7, 8], [2, 4, 6, 9]]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fork")
    return {
        "h264": write_video(root / "camera.mp4", width=640, height=360, num_frames=16, keyframe_interval=250),
        "h264_b": write_video(root / "camera_b.mp4", width=640, height=360, num_frames=16, keyframe_interval=250, seed=1),
        "vp9": write_video(root / "phone.webm", width=320, height=240, num_frames=12, codec="vp9"),
        "frames": write_frame_folder(root / "frames", width=320, height=192, num_frames=16),
        "small": write_test_video(root / "small.mp4", class_frames(1, 20, seed=3)),
    }


def _old_way(path: Path, indices: list[int]) -> torch.Tensor:
    """The frames as tdnzoo's reader returned them before the fix: PyAV's ``to_ndarray(format='rgb24')``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    return torch.stack([decoded[min(i, len(decoded) - 1)] for i in indices])


def _forked(target: Callable[[], None], processes: int = 2) -> None:
    """Run ``target`` in forked processes; each must exit 0 within the deadline (killed otherwise)."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target) for _ in range(processes)]
    for p in procs:
        p.start()
    codes = []
    for p in procs:
        p.join(DEADLINE_S)
        codes.append(p.exitcode)
        if p.exitcode is None:
            p.kill()
            p.join()
    assert codes == [0] * processes, f"forked readers: exit codes {codes} (None: hung for {DEADLINE_S} s, killed)"


def _fork_loader(dataset: Dataset, **kwargs) -> DataLoader:
    return DataLoader(dataset, num_workers=2, multiprocessing_context="fork", timeout=DEADLINE_S, **kwargs)


class _ClipReads(Dataset):
    def __init__(self, path: Path, clips: list[list[int]]) -> None:
        self.path, self.clips = path, clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_frames(self.path, self.clips[index])


@pytest.mark.parametrize("name", ["h264", "vp9", "small"])
def test_frames_are_those_of_the_reader_before_the_fix(media, name):
    for indices in CLIPS + [[3], [0, 100, 2]]:  # any order, repeats, past the end (the last frame)
        assert torch.equal(read_frames(media[name], indices), _old_way(media[name], indices))
    tchw = read_frames(media[name], [4, 2], layout="TCHW")
    assert tchw.is_contiguous() and torch.equal(tchw, _old_way(media[name], [4, 2]).permute(0, 3, 1, 2))


def test_loader_workers_read_frames_after_the_parent_decoded(media):
    expected = [read_frames(media["h264"], clip) for clip in CLIPS]  # the parent decodes first
    loaded = list(_fork_loader(_ClipReads(media["h264"], CLIPS), batch_size=None))
    assert len(loaded) == len(CLIPS) and all(torch.equal(a, b) for a, b in zip(loaded, expected))


def test_video_dataset_workers_after_looking_at_an_item(media):
    records = [VideoRecord(str(media[k]), label) for label, k in enumerate(["h264", "h264_b", "h264", "h264_b"])]
    ds = VideoDataset(records, num_segments=4, mode="val", transform=lambda clip: clip)
    first, label = ds[0]  # what a user does before building the loader
    assert first.shape == (4, 3, 360, 640) and label == 0
    clips = [clip for clip, _ in _fork_loader(ds, batch_size=1)]
    assert len(clips) == 4 and all(torch.equal(clips[i][0], ds[i][0]) for i in range(4))
    assert torch.equal(clips[0][0], first)


@pytest.fixture
def fork_start() -> Iterator[None]:
    """The loaders' workers started with ``fork`` (Linux's default before Python 3.14) for this test."""
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("fork", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)


def test_predict_with_workers_after_a_decode_in_the_same_process(media, fork_start):
    read_frames(media["h264"], [0, 8])  # a notebook or service that has decoded videos before
    torch.manual_seed(0)
    model = create_model("tsn_test_resnet", num_segments=2, num_classes=3).eval()
    paths = [media["h264"], media["h264_b"], media["small"]]
    here = tdnzoo.predict(paths, model, views="1x1", input_size=64, workers=0)
    forked = tdnzoo.predict(paths, model, views="1x1", input_size=64, workers=2)
    assert [r.ok for r in forked] == [True] * 3
    for a, b in zip(here, forked):
        torch.testing.assert_close(a.probs, b.probs)


def test_forked_processes_decode_videos_and_frame_folders(media):
    """Plain forked processes (no DataLoader, which gives torch one thread): the parent decodes with torch's
    thread pool running, then children read videos and frame folders with both image decoders."""
    jobs = [(media["h264"], {}), (media["vp9"], {}), (media["frames"], {}),
            (media["frames"], {"image_backend": "torchvision"})]
    with torch_threads(2):
        expected = [read_frames(path, CLIPS[0], **kw).numpy() for path, kw in jobs]

        def child() -> None:
            for (path, kw), want in zip(jobs, expected):
                got = read_frames(path, CLIPS[0], **kw).numpy()  # compared in NumPy: no torch op in the child
                if not np.array_equal(got, want):
                    raise SystemExit(f"{path}: other frames in the child")

        _forked(child)


def test_a_reader_opened_before_fork_reads_in_the_child(media):
    """A reader object crossing the fork (its decoder's frame threads are the parent's): it reopens its file."""
    reader = open_video(media["h264"])
    want = reader.get_frames(CLIPS[1]).numpy()

    def child() -> None:
        if len(reader) != 16 or not np.array_equal(reader.get_frames(CLIPS[1]).numpy(), want):
            raise SystemExit("other frames in the child")
        reader.close()

    try:
        _forked(child)
        assert np.array_equal(reader.get_frames(CLIPS[1]).numpy(), want)  # the parent's reader still works
    finally:
        reader.close()


# -- a worker that stops answering: a clear error, naming the worker and the video -------------------------
class _OneStuckVideo(Dataset):
    """Videos whose item 3 never finishes in a worker process (as a decoder waiting on a lost thread)."""

    paths = [f"/data/clip_{i}.mp4" for i in range(6)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> int:
        if index == 3 and torch.utils.data.get_worker_info() is not None:
            time.sleep(600)
        return index

    def describe_item(self, index: int) -> str:
        return f"item {index}: {self.paths[index]}"


def test_a_stuck_worker_is_an_error_naming_it_and_its_video():
    loader = watched_loader(_OneStuckVideo(), workers=2, timeout_s=3, batch_size=None)
    start = time.monotonic()
    got = []
    with pytest.raises(WorkerTimeoutError, match=r"worker 1 \(pid \d+\) has been reading item 3: /data/clip_3.mp4") as info:
        for item in loader:
            got.append(item)
    assert got == [0, 1, 2] and "--loader-timeout" in str(info.value)
    assert time.monotonic() - start < 30  # the stuck worker is stopped, not waited for
    assert watched_loader(_OneStuckVideo(), workers=0).timeout_s == 0  # in-process loading has no deadline
    with pytest.raises(ValueError, match="timeout"):
        watched_loader(_OneStuckVideo(), workers=2, timeout_s=-1)


def test_training_saves_and_resumes_when_a_worker_stops_answering(tmp_path, monkeypatch):
    data = make_folder_dataset(tmp_path / "data", num_classes=2, per_class={"train": 4}, num_frames=12)
    stuck = sorted((data / "train").rglob("*.mp4"))[5]
    read_clips = VideoDataset.read_clips

    def never_in_the_second_epoch(self, record):
        if self.epoch == 1 and record.path == str(stuck) and torch.utils.data.get_worker_info() is not None:
            time.sleep(600)
        return read_clips(self, record)

    cfg = dict(model="tsn_test_resnet", data_root=str(data), output=str(tmp_path / "run"), num_segments=2,
               input_size=32, epochs=2, batch_size=4, workers=2, lr=0.05, lr_steps=[], progress=False, seed=0)
    monkeypatch.setattr(VideoDataset, "read_clips", never_in_the_second_epoch)
    with pytest.raises(WorkerTimeoutError, match=rf"reading item \d+: {stuck}.*saved in .*last.pt after epoch 2, step"):
        train(TrainConfig(loader_timeout=6, **cfg))
    saved = load_training_checkpoint(tmp_path / "run" / "last.pt")
    steps_per_epoch = 2  # 8 videos, batches of 4
    assert saved["epoch"] == 1 and saved["scheduler"]["last_epoch"] == steps_per_epoch + saved["step"]
    monkeypatch.undo()
    resumed = train(TrainConfig(resume=True, **cfg))
    final = load_training_checkpoint(resumed.last_checkpoint)
    assert final["epoch"] == 2 and "step" not in final
    assert final["scheduler"]["last_epoch"] == 2 * steps_per_epoch  # every batch trained on once, none twice
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[-1]["steps"] == steps_per_epoch - saved["step"]
