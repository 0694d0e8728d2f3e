"""Damaged input is reported, never invented: a faststart MP4 cut in half (its index declares 20 frames,
about half decode) is read at its real length by the reader, training, evaluation, prediction and
sliding windows, with one warning naming both counts; an image renamed ``.mp4`` is refused."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from tdnzoo import create_model
from tdnzoo.cli import main as cli_main
from tdnzoo.data import (
    TruncatedVideoError,
    TruncatedVideoWarning,
    VideoDataset,
    VideoDecodeError,
    VideoRecord,
    count_frames,
    open_video,
    read_frames,
    read_sampled,
)
from tdnzoo.data.sampling import multi_clip_indices, val_indices
from tdnzoo.eval import build_eval_dataset, evaluate
from tdnzoo.prediction import predict, predict_windows, resolve_view_spec, window_bounds

from .datagen import class_frames, decodable_frames, frame_ids, write_cut_video, write_frame_folder, write_video

pytestmark = pytest.mark.usefixtures("one_thread")

DECLARED = 20  # frames written; the cut file's index still lists them all
FPS = 8


def raw(clip):  # no transform: uint8 frames as read, so frame_ids() can tell which frames were used
    return clip


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    frames = class_frames(1, DECLARED)
    out = {"cut": write_cut_video(root / "cut.mp4", frames, fps=FPS), "whole": write_video(root / "whole.mp4", frames)}
    Image.fromarray(frames[0]).save(root / "still.png")
    Image.fromarray(frames[0]).save(root / "still.jpg")
    out["png"] = (root / "still.png").rename(root / "png.mp4")
    out["jpg"] = (root / "still.jpg").rename(root / "jpg.mp4")
    return out


@pytest.fixture
def cut(media, tmp_path) -> tuple[Path, int]:
    """A fresh copy of the cut file (the once-per-file warning is per path) and how many frames decode."""
    path = Path(shutil.copy(media["cut"], tmp_path / "cut.mp4"))
    real = decodable_frames(path)
    assert 0 < real < DECLARED  # the premise: the container declares more than decodes
    return path, real


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("tsn_test_resnet", num_segments=2, num_classes=3).eval()
    with torch.no_grad():
        net.get_classifier().weight.mul_(100)  # scores that differ visibly from frame to frame
    return net


def _truncation_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TruncatedVideoWarning)]


@pytest.mark.parametrize("threads", ["AUTO", None])  # FFmpeg ends quietly with frame threads, raises without
def test_reader_raises_past_the_real_end_and_warns_once_with_both_counts(cut, threads):
    path, real = cut
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_video(path, threads=threads) as reader:
            assert len(reader) == DECLARED and reader.declared_frames == DECLARED  # all the index knows
            assert frame_ids(reader.get_frames([0, real - 1])) == [0, real - 1]
            with pytest.raises(TruncatedVideoError) as err:
                reader.get_frames([1, real])  # one frame past the cut: no frozen last frame
            assert (err.value.declared_frames, err.value.num_frames) == (DECLARED, real)
            assert isinstance(err.value, VideoDecodeError) and err.value.path == str(path)
            assert len(reader) == real
            with pytest.raises(TruncatedVideoError):
                reader.get_frames([DECLARED - 1])
        # Opened again in this process: the real length from the start, no second warning.
        with open_video(path, threads=threads) as reader:
            assert len(reader) == real and reader.declared_frames == DECLARED
        assert count_frames(path) == real
    messages = _truncation_warnings(caught)
    assert len(messages) == 1, messages
    assert f"declares {DECLARED} frames but only {real} decode" in messages[0] and str(path) in messages[0]


def test_read_sampled_samples_again_within_the_real_frames(cut):
    path, real = cut
    with pytest.warns(TruncatedVideoWarning), open_video(path) as reader:
        read = read_sampled(reader, lambda n: val_indices(n, 4))
    assert (read.num_frames, read.declared_frames, read.truncated) == (real, DECLARED, True)
    assert frame_ids(read.frames) == val_indices(real, 4)


def test_whole_video_is_not_reported(media):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        with open_video(media["whole"]) as reader:
            read = read_sampled(reader, lambda n: val_indices(n, 4))
            assert frame_ids(reader.get_frames([DECLARED - 1, DECLARED + 5])) == [DECLARED - 1] * 2  # clamped, as frame folders
    assert (read.num_frames, read.truncated) == (DECLARED, False) and frame_ids(read.frames) == val_indices(DECLARED, 4)


@pytest.mark.parametrize("name", ["png", "jpg"])
def test_an_image_renamed_as_a_video_is_refused(media, name):
    with pytest.raises(VideoDecodeError, match=r"is an image \((png|jpeg)\), not a video"):
        open_video(media[name])
    with pytest.raises(VideoDecodeError, match="not a video"):
        read_frames(media[name], [0])


def test_training_samples_within_the_real_frames_and_warns_once(cut, media):
    path, real = cut
    ds = VideoDataset([VideoRecord(str(path), 0), VideoRecord(str(media["whole"]), 1)], num_segments=4,
                      mode="train", transform=raw, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(3):
            ds.set_epoch(epoch)
            clip, label = ds[0]
            ids = frame_ids(clip)
            assert label == 0 and clip.shape[0] == 4
            assert ids == sorted(ids) and max(ids) < real, ids  # real frames, in order
            assert len(set(ids)) == 4, ids  # distinct: no frame repeated to fill the declared length
    assert ds.num_skipped == 0  # used, not replaced by another video
    assert len(_truncation_warnings(caught)) == 1


def test_frame_folder_with_fewer_frames_than_its_list_declares(tmp_path):
    folder = write_frame_folder(tmp_path / "frames", class_frames(0, 8), "{:05d}.png")  # the list says 16
    ds = VideoDataset([VideoRecord(str(folder), 3, num_frames=16)], num_segments=4, mode="val", transform=raw,
                      frame_template="{:05d}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            clip, label = ds[0]
            assert label == 3 and frame_ids(clip) == val_indices(8, 4)
    assert ds.num_skipped == 0
    (message,) = _truncation_warnings(caught)
    assert "declares 16 frames but only 8 decode" in message


def test_evaluation_samples_within_the_real_frames(cut, media, model):
    path, real = cut
    root = path.parent / "data"
    for label, video in ((0, path), (1, media["whole"])):
        (root / "val" / f"class_{label}").mkdir(parents=True)
        shutil.copy(video, root / "val" / f"class_{label}" / video.name)
    copied = root / "val" / "class_0" / path.name
    test_mode = VideoDataset([VideoRecord(str(copied), 0)], num_segments=2, mode="test", num_clips=2, transform=raw)
    with pytest.warns(TruncatedVideoWarning, match=f"only {real} decode"):
        views, _ = test_mode[0]
    assert [frame_ids(v) for v in views] == multi_clip_indices(real, 2, num_clips=2)

    ds = build_eval_dataset(model, root=root, views="2x1", input_size=64)
    result = evaluate(model, ds)
    assert result.num_videos == 2 and result.skipped == []
    spec = resolve_view_spec(model, views="2x1", input_size=64)
    with torch.no_grad():
        clips = [spec.transform()(read_frames(copied, c, layout="TCHW")) for c in multi_clip_indices(real, 2, num_clips=2)]
        expected = model(torch.stack(clips)).softmax(dim=1).mean(dim=0)
    torch.testing.assert_close(result.probs[0], expected, atol=1e-5, rtol=1e-4)


def test_predict_reports_the_real_length_and_refuses_an_image(cut, media, model):
    path, real = cut
    with pytest.warns(TruncatedVideoWarning):
        cut_pred, png_pred, whole_pred = predict([path, media["png"], media["whole"]], model, views="1x1",
                                                 input_size=64, device="cpu")
    assert (cut_pred.num_frames, cut_pred.declared_frames, cut_pred.truncated) == (real, DECLARED, True)
    assert cut_pred.seconds == pytest.approx(real / FPS)
    spec = resolve_view_spec(model, views="1x1", input_size=64)
    with torch.no_grad():
        frames = read_frames(path, val_indices(real, 2), layout="TCHW")
        torch.testing.assert_close(cut_pred.probs, model(spec.transform()(frames).unsqueeze(0)).softmax(dim=1)[0], atol=1e-5, rtol=1e-4)
    doc = cut_pred.to_dict()
    assert (doc["num_frames"], doc["seconds"], doc["declared_frames"], doc["truncated"]) == (real, real / FPS, DECLARED, True)
    assert not png_pred.ok and "not a video" in png_pred.error
    assert (whole_pred.num_frames, whole_pred.truncated, whole_pred.seconds) == (DECLARED, False, DECLARED / 8)
    assert "declared_frames" not in whole_pred.to_dict()


def test_sliding_windows_stop_at_the_real_end(cut, model):
    path, real = cut
    with pytest.warns(TruncatedVideoWarning):
        scores = predict_windows(path, model, window=4, stride=2, input_size=64, device="cpu")
    assert scores.bounds == window_bounds(real, 4, 2) and scores.bounds[-1] == (real - 4, real)
    assert (scores.num_frames, scores.declared_frames, scores.seconds) == (real, DECLARED, round(real / FPS, 3))
    spec = resolve_view_spec(model, views="1x1", input_size=64)
    with torch.no_grad():
        for w, (start, end) in enumerate(scores.bounds):  # every window scores its own real frames
            (clip,) = spec.clip_indices(end - start)
            frames = read_frames(path, [start + i for i in clip], layout="TCHW")
            torch.testing.assert_close(scores.probs[w], model(spec.transform()(frames).unsqueeze(0)).softmax(dim=1)[0],
                                       atol=1e-5, rtol=1e-4)
    doc = scores.to_dict()
    assert (doc["num_frames"], doc["declared_frames"], doc["truncated"]) == (real, DECLARED, True)
    assert doc["segments"][-1]["end_frame"] == real and doc["windows"][-1]["end_time"] == round(real / FPS, 3)


@pytest.mark.filterwarnings("always::tdnzoo.data.TruncatedVideoWarning")  # as a user sees it, not an error
def test_cli_predict_reports_the_cut_once_and_refuses_the_image(cut, media, model, tmp_path, capsys):
    path, real = cut
    checkpoint = tmp_path / "model.pt"
    torch.save({  # a tdnzoo training checkpoint (tdnzoo/train/state.py), minus optimizer state
        "format": "tdnzoo-train", "version": 1, "model": model.state_dict(), "epoch": 1,
        "args": {"model": "tsn_test_resnet", "input_size": 64, "model_kwargs": {}}, "architecture": "tsn_test_resnet",
        "model_name": "tsn_test_resnet", "model_args": {"num_segments": 2}, "num_classes": 3, "class_names": ["a", "b", "c"],
    }, checkpoint)
    common = ["--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu", "--json"]
    assert cli_main(["predict", str(path), str(media["png"]), "--workers", "0", *common]) == 0
    out, err = capsys.readouterr()
    cut_doc, png_doc = json.loads(out)["results"]
    assert (cut_doc["num_frames"], cut_doc["seconds"], cut_doc["declared_frames"]) == (real, real / FPS, DECLARED)
    assert "not a video" in png_doc["error"]
    assert err.count(f"warning: {path} declares {DECLARED} frames but only {real} decode") == 1, err

    assert cli_main(["predict", str(path), "--window", "4", "--stride", "2", "--output", str(tmp_path / "w"), *common]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["results"]
    assert (entry["num_frames"], entry["declared_frames"], entry["num_windows"]) == (real, DECLARED, len(window_bounds(real, 4, 2)))
    saved = json.loads(Path(entry["files"]["json"]).read_text())
    assert saved["num_frames"] == real and saved["windows"][-1]["end_frame"] == real
