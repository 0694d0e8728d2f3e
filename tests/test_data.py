"""Decoding, datasets in every layout, and bad data: on tiny generated videos and frame folders."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from tdnzoo import TdnzooError
from tdnzoo.data import (
    CorruptVideoWarning,
    DataError,
    ThreeCrop,
    VideoDataset,
    VideoDecodeError,
    VideoRecord,
    build_dataset,
    count_frames,
    load_views,
    open_video,
    read_frames,
    read_list_file,
    train_transform,
)
from tdnzoo.data.sampling import multi_clip_indices, val_indices

from .datagen import class_frames, frame_ids, make_folder_dataset, write_frame_folder, write_video


def raw(clip):  # a plain callable: no transform, uint8 frames as read
    return clip


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    frames = class_frames(1, 16)
    write_video(root / "a.mp4", frames)
    write_video(root / "a.webm", frames, codec="libvpx")
    write_frame_folder(root / "jpg", frames, "{:05d}.jpg")
    write_frame_folder(root / "png6", frames, "{:06d}.png")
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    return root


@pytest.mark.parametrize("name", ["a.mp4", "a.webm", "jpg", "png6"])
def test_read_frames_any_order_and_layout(media, name):
    path = media / name
    assert count_frames(path) == 16
    frames = read_frames(path, [0, 5, 15, 3, 3])
    assert frames.dtype == torch.uint8 and frames.shape == (5, 64, 64, 3)
    assert frame_ids(frames) == [0, 5, 15, 3, 3]
    chw = read_frames(path, [2, 9], layout="TCHW")
    assert chw.shape == (2, 3, 64, 64) and frame_ids(chw) == [2, 9]


def test_frame_folder_torchvision_backend_and_past_the_end(media):
    assert frame_ids(read_frames(media / "jpg", [1, 7], image_backend="torchvision")) == [1, 7]
    with open_video(media / "jpg") as reader:
        assert reader.template == "{:05d}.jpg" and len(reader) == 16
        assert frame_ids(reader.get_frames([15, 20])) == [15, 15]  # clamped to the last frame
    with open_video(media / "a.mp4") as reader:
        assert frame_ids(reader.get_frames([15, 30])) == [15, 15]


def test_corrupt_and_missing_videos_raise_decode_errors(media, tmp_path):
    with pytest.raises(VideoDecodeError, match="corrupt.mp4") as info:
        read_frames(media / "corrupt.mp4", [0])
    assert isinstance(info.value, TdnzooError) and info.value.path.endswith("corrupt.mp4")
    with pytest.raises(VideoDecodeError, match="not found"):
        count_frames(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match="frame names"):
        count_frames(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match="00001.jpg"):
        read_frames(tmp_path / "bad", [0])
    with pytest.raises(ValueError, match="layout"):
        read_frames(media / "a.mp4", [0], layout="HWC")


def test_official_list_layouts(media, tmp_path):
    # Something-Something V1: `frame_dir num_frames label`, {:05d}.jpg frames
    (tmp_path / "v1.txt").write_text("jpg 16 86\n\njpg 16 3\n")
    v1 = build_dataset("sthv1", root=media, list_file=tmp_path / "v1.txt", split="val", num_segments=4,
                       frames_per_segment=1, transform=raw)
    assert v1.num_classes == 174 and len(v1.class_names) == 174 and v1.class_names[86].startswith("Pulling")
    clip, label = v1[0]
    assert clip.shape == (4, 3, 64, 64) and label == 86
    assert frame_ids(clip) == val_indices(16, 4)
    # V2: `{:06d}` frames, or videos named without extension (webm found)
    (tmp_path / "v2.txt").write_text("png6 16 5\na 7\n")
    v2ds = build_dataset("sthv2", root=media, list_file=tmp_path / "v2.txt", split="val", num_segments=2,
                         frames_per_segment=5, transform=raw, frame_template="{:06d}.png")
    for i, label in enumerate((5, 7)):
        clip, got = v2ds[i]
        assert clip.shape == (10, 3, 64, 64) and got == label and frame_ids(clip) == val_indices(16, 2, 5)
    # Kinetics: `video.mp4 label`
    (tmp_path / "k.txt").write_text("a.mp4 399\n")
    k = build_dataset("kinetics", root=media, list_file=tmp_path / "k.txt", split="val", num_segments=8, transform=raw)
    assert k.num_classes == 400 and k[0][1] == 399 and frame_ids(k[0][0]) == val_indices(16, 8)


def test_folder_layout_train_val_and_multi_view_test(tmp_path):
    root = make_folder_dataset(tmp_path / "data", num_classes=3, per_class={"train": 2, "val": 1}, num_frames=16)
    write_frame_folder(root / "train" / "class_2" / "frames_0", class_frames(2, 16))  # frame folders mix in
    train = build_dataset("folder", root=root, split="train", num_segments=2, frames_per_segment=5,
                          transform=train_transform(56))
    assert train.class_names == ["class_0", "class_1", "class_2"] and len(train) == 7
    assert sorted(train.labels) == [0, 0, 1, 1, 2, 2, 2] and train.mode == "train"
    clip, label = train[6]
    assert clip.shape == (10, 3, 56, 56) and clip.dtype == torch.float32 and label == 2

    test = build_dataset("folder", root=root, split="val", num_segments=4, mode="test", num_clips=2,
                         transform=v2.Compose([ThreeCrop(64)]), class_names=train.class_names)
    views, label = test[0]
    assert views.shape == (6, 4, 3, 64, 64)  # 2 clips x 3 crops, clip-major
    clips = multi_clip_indices(16, 4, num_clips=2)
    assert [frame_ids(v) for v in views] == [clips[0]] * 3 + [clips[1]] * 3
    (root / "val" / "extra_class").mkdir()
    (root / "val" / "extra_class" / "x.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="extra_class"):
        build_dataset("folder", root=root, split="val", num_segments=4, class_names=train.class_names)


def test_seeded_items_do_not_depend_on_workers_or_order(tmp_path):
    root = make_folder_dataset(tmp_path / "data", num_classes=2, per_class={"train": 2}, num_frames=12)
    ds = build_dataset("folder", root=root, split="train", num_segments=2, transform=train_transform(48), seed=7)
    here = [ds[i][0] for i in range(len(ds))]
    assert torch.equal(ds[2][0], here[2]) and not torch.equal(here[0], ds[1][0])
    loaded = [clip[0] for clip, _ in DataLoader(ds, batch_size=1, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(here, loaded))
    ds.set_epoch(1)  # another epoch, other draws
    assert not all(torch.equal(a, ds[i][0]) for i, a in enumerate(here))


def test_load_views_of_one_video(media):
    class Model:  # what load_views needs from a model
        num_segments, frames_per_segment = 2, 5
        pretrained_cfg = {"input_size": (3, 56, 56), "crop_pct": 0.875}

    views = load_views(media / "a.mp4", Model(), views="2x3")
    assert views.shape == (6, 10, 3, 64, 64) and views.dtype == torch.float32
    assert load_views(media / "jpg", Model()).shape == (1, 10, 3, 56, 56)
    with pytest.raises(VideoDecodeError):
        load_views(media / "corrupt.mp4", Model())


def test_corrupt_video_is_replaced_warned_and_counted(tmp_path):
    root = make_folder_dataset(tmp_path / "data", num_classes=2, per_class={"train": 2}, num_frames=8)
    bad = root / "train" / "class_1" / "1_0.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    ds = build_dataset("folder", root=root, split="train", num_segments=2, transform=raw)
    with pytest.warns(CorruptVideoWarning, match="1_0.mp4"):
        samples = [ds.load(i) for i in range(len(ds))]
    assert ds.num_skipped == 1 and ds.skipped == [str(bad)]
    hit = [s for s in samples if s.skipped]
    assert len(hit) == 1 and hit[0].skipped == (str(bad),)
    assert ds.records[hit[0].index].path != str(bad) and hit[0].clip.shape == (2, 3, 64, 64)
    assert all(s.clip.shape == (2, 3, 64, 64) for s in samples)

    broken = VideoDataset([VideoRecord(str(bad), 0)] * 3, num_segments=2, transform=raw, max_retries=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptVideoWarning)
        with pytest.raises(VideoDecodeError, match="3 videos in a row"):
            broken[0]


def test_bad_data_errors_before_training(tmp_path):
    common = {"num_segments": 2, "transform": raw}
    with pytest.raises(DataError, match="data root not found"):
        build_dataset("folder", root=tmp_path / "missing", **common)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        build_dataset("folder", root=tmp_path, **common)
    (tmp_path / "train" / "walking").mkdir()
    (tmp_path / "train" / "walking" / "notes.txt").write_text("not a video")
    with pytest.raises(DataError, match="walking is empty"):
        build_dataset("folder", root=tmp_path, **common)
    with pytest.raises(DataError, match="list file not found"):
        build_dataset("kinetics", root=tmp_path, list_file=tmp_path / "nope.txt", **common)
    with pytest.raises(DataError, match="needs a list file"):
        build_dataset("sthv1", root=tmp_path, **common)
    (tmp_path / "list.txt").write_text("a.mp4 3\nb.mp4 174\n")
    with pytest.raises(DataError, match=r"list.txt:2: label 174 is outside the class range \[0, 174\)"):
        build_dataset("sthv1", root=tmp_path, list_file=tmp_path / "list.txt", **common)
    with pytest.raises(DataError, match=r"list.txt:2: label 174"):
        read_list_file(tmp_path / "list.txt", num_classes=10)
    (tmp_path / "bad.txt").write_text("a.mp4 3\nonly_a_path\n")
    with pytest.raises(DataError, match="bad.txt:2: expected"):
        read_list_file(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="unknown dataset layout"):
        build_dataset("ucf", root=tmp_path, **common)
    with pytest.raises(DataError, match="outside the class range"):
        VideoDataset([VideoRecord("x.mp4", 5)], num_segments=2, num_classes=3)
    assert issubclass(DataError, TdnzooError)
