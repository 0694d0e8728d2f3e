"""The synthetic temporal-reasoning dataset: classes, determinism, time reversal, mp4 files, layout, CLI."""
from __future__ import annotations

import dataclasses
import json
import os

import av
import numpy as np
import pytest

from tdnzoo.cli import main
from tdnzoo.data import synthetic as syn

SIZE, FRAMES = 48, 12


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def without_actor(scene: syn.Scene) -> syn.Scene:
    return dataclasses.replace(scene, sprites=scene.sprites[:-1])


def centroids(mask: np.ndarray) -> np.ndarray:
    """[T, H, W] bool -> [T, 2] (x, y) pixel-centre centroids."""
    ys, xs = np.mgrid[0:mask.shape[1], 0:mask.shape[2]] + 0.5
    n = mask.sum(axis=(1, 2))
    assert (n > 0).all(), "the shape is not visible in every frame"
    return np.stack([(mask * xs).sum(axis=(1, 2)) / n, (mask * ys).sum(axis=(1, 2)) / n], axis=1)


def actor_mask(scene: syn.Scene) -> np.ndarray:
    """Pixels the actor changes: the same scene rendered with and without it (noise is the same in both)."""
    diff = np.abs(syn.render_scene(scene).astype(int) - syn.render_scene(without_actor(scene))).max(axis=-1)
    return diff > 3


def test_classes_come_in_time_reversed_pairs_plus_controls():
    assert len(syn.ALL_CLASSES) == 16 and set(syn.DEFAULT_CLASSES) <= set(syn.ALL_CLASSES)
    assert len(syn.REVERSAL_PAIRS) == 5 and set(syn.MOTION_CLASSES) == {"moving", "still"}
    assert len(syn.APPEARANCE_CLASSES) == 4
    for name, info in syn.CLASSES.items():
        assert info.name == name and info.kind in syn.KINDS and info.description
        assert syn.REVERSE_OF[syn.REVERSE_OF[name]] == name  # an involution
        if info.kind == "reversal_pair":
            assert syn.REVERSE_OF[name] != name and syn.CLASSES[syn.REVERSE_OF[name]].kind == "reversal_pair"
        else:  # reversal leaves these distributions unchanged
            assert syn.REVERSE_OF[name] == name
    for a, b in syn.REVERSAL_PAIRS:
        assert syn.REVERSE_OF[a] == b
    paired = {c for pair in syn.REVERSAL_PAIRS for c in pair}
    assert paired | set(syn.MOTION_CLASSES) | set(syn.APPEARANCE_CLASSES) == set(syn.ALL_CLASSES)


def test_rendering_is_a_pure_function_of_class_seed_frames_size():
    for name in syn.ALL_CLASSES:
        clip = syn.render_video(name, 11, FRAMES, SIZE)
        assert clip.dtype == np.uint8 and clip.shape == (FRAMES, SIZE, SIZE, 3)
        assert np.array_equal(clip, syn.render_video(name, 11, FRAMES, SIZE))
        assert not np.array_equal(clip, syn.render_video(name, 12, FRAMES, SIZE))
        assert clip.std() > 10  # a scene, not a blank frame
    assert syn.render_video("moving", 3, 5, 32).shape == (5, 32, 32, 3)


def test_video_seeds_are_independent_of_order_and_distinct():
    seeds = {syn.video_seed(s, c, i) for s in (0, 1) for c in syn.ALL_CLASSES for i in range(20)}
    assert len(seeds) == 2 * 16 * 20 and all(0 <= s < 2**63 for s in seeds)
    assert syn.video_seed(0, "appear", 3) == syn.video_seed(0, "appear", 3)


@pytest.mark.parametrize("forward,backward", syn.REVERSAL_PAIRS)
def test_time_reversed_clip_is_a_clip_of_the_partner_class(forward, backward):
    for seed in (0, 7, 2**40 + 5):
        clip = syn.render_video(forward, seed, FRAMES, SIZE)
        assert np.array_equal(syn.render_video(backward, seed, FRAMES, SIZE), clip[::-1])
        assert not np.array_equal(clip, clip[::-1])  # the direction is in the frames
        # No single frame separates the pair: both clips hold the very same frames.
        assert np.array_equal(np.sort(clip.reshape(FRAMES, -1), axis=0),
                              np.sort(syn.render_video(backward, seed, FRAMES, SIZE).reshape(FRAMES, -1), axis=0))


@pytest.mark.parametrize("seed,difficulty", [(1, "easy"), (2, "easy"), (3, "normal"), (4, "hard")])
def test_the_marked_shape_moves_as_its_class_says(seed, difficulty):
    size = 64
    path = {}
    for name in ("move_left_to_right", "move_top_to_bottom", "moving", "still"):
        path[name] = centroids(actor_mask(syn.sample_scene(name, seed, FRAMES, size, difficulty)))
    (dx, dy) = path["move_left_to_right"][-1] - path["move_left_to_right"][0]
    assert dx > 0.25 * size and abs(dy) < 0.5 * dx
    (dx, dy) = path["move_top_to_bottom"][-1] - path["move_top_to_bottom"][0]
    assert dy > 0.25 * size and abs(dx) < 0.5 * dy
    assert np.linalg.norm(path["moving"][-1] - path["moving"][0]) > 0.25 * size
    assert np.ptp(path["still"], axis=0).max() < 4  # camera shake only

    area = actor_mask(syn.sample_scene("approach", seed, FRAMES, size, difficulty)).sum(axis=(1, 2))
    assert area[-1] > 2.5 * area[0]
    visible = actor_mask(syn.sample_scene("appear", seed, FRAMES, size, difficulty)).sum(axis=(1, 2))
    assert visible[0] == 0 and visible[-1] > 0.01 * size * size


def marker_turn(scene: syn.Scene, mirror: bool = False) -> np.ndarray:
    """Per-frame angle (radians, unwrapped) of the actor's dot around its centre; + is clockwise on screen."""
    plain = dataclasses.replace(scene, sprites=[*scene.sprites[:-1], dataclasses.replace(scene.actor, marker=False)])
    dot = np.abs(syn.render_scene(scene).astype(int) - syn.render_scene(plain)).max(axis=-1) > 3
    centre = scene.actor.centre - scene.jitter  # the shape's centre in pixels
    if mirror:
        dot, centre = dot[:, :, ::-1], np.stack([scene.size - centre[:, 0], centre[:, 1]], axis=1)
    offset = centroids(dot) - centre
    return np.unwrap(np.arctan2(offset[:, 1], offset[:, 0]))  # image axes: y points down


@pytest.mark.parametrize("seed", [4, 5])
def test_rotate_clockwise_turns_the_marker_clockwise_on_screen(seed):
    turn = marker_turn(syn.sample_scene("rotate_clockwise", seed, FRAMES, 64))
    assert turn[-1] - turn[0] > np.pi / 3
    assert np.all(np.diff(turn) > -0.15)  # never turns back


def test_a_mirrored_clip_belongs_to_its_hflip_class():
    for name in syn.ALL_CLASSES:
        assert syn.HFLIP_OF[syn.HFLIP_OF[name]] == name
    assert syn.HFLIP_OF["move_left_to_right"] == "move_right_to_left"
    assert syn.HFLIP_OF["move_top_to_bottom"] == "move_top_to_bottom" and syn.HFLIP_OF["approach"] == "approach"
    scene = syn.sample_scene("move_left_to_right", 6, FRAMES, 64)
    path = centroids(actor_mask(scene)[:, :, ::-1])
    assert path[-1, 0] - path[0, 0] < -0.25 * 64  # mirrored, it moves right to left
    turn = marker_turn(syn.sample_scene("rotate_clockwise", 6, FRAMES, 64), mirror=True)
    assert syn.HFLIP_OF["rotate_clockwise"] == "rotate_counterclockwise" and turn[-1] - turn[0] < -np.pi / 3


def test_moving_still_and_appearance_classes_differ_only_in_what_names_them():
    for seed in (0, 1, 2):
        moving, still = (syn.sample_scene(name, seed, FRAMES, SIZE) for name in ("moving", "still"))
        assert moving.background == still.background and np.array_equal(moving.jitter, still.jitter)
        assert moving.actor.shape == still.actor.shape and np.array_equal(moving.actor.colour, still.actor.colour)
        for a, b in zip(moving.sprites[:-1], still.sprites[:-1]):
            assert np.array_equal(a.centre, b.centre)
        # The still shape sits on the moving shape's path, so a single frame cannot tell which is which.
        p0, p1, q = moving.actor.centre[0], moving.actor.centre[-1], still.actor.centre[0]
        assert np.ptp(still.actor.centre, axis=0).max() == 0
        d, e = p1 - p0, q - p0
        assert abs(d[0] * e[1] - d[1] * e[0]) / np.linalg.norm(d) < 1e-6
        assert min(p0 @ (p1 - p0), p1 @ (p1 - p0)) - 1e-6 <= q @ (p1 - p0) <= max(p0 @ (p1 - p0), p1 @ (p1 - p0)) + 1e-6

        # Appearance classes: the same actor doing the same thing (so motion carries no label); the backdrop
        # pattern, which the other classes never have, names the class.
        scenes = [syn.sample_scene(name, seed, FRAMES, SIZE) for name in syn.APPEARANCE_CLASSES]
        assert [s.background["pattern"]["kind"] for s in scenes] == ["checkerboard", "stripes", "dots", "grid"]
        assert moving.background["pattern"] is None and still.background["pattern"] is None
        for s in scenes:
            assert s.background["waves"] == moving.background["waves"]
            for field in ("centre", "radius", "angle", "alpha", "colour"):
                assert np.array_equal(getattr(s.actor, field), getattr(scenes[0].actor, field))
            assert s.actor.shape == moving.actor.shape
    # The appearance classes' actor does what moving or still does, half the time each.
    kinds = [np.ptp(syn.sample_scene("appearance_dots", s).actor.centre, axis=0).max() == 0 for s in range(40)]
    assert 10 < sum(kinds) < 30


def test_appearance_classes_are_told_apart_by_any_single_frame():
    """Same seed, same scene: only the backdrop pattern differs, and it covers much of every frame."""
    for seed in (0, 1):
        clips = {name: syn.render_video(name, seed, 4, 64).astype(float)
                 for name in ("moving", "still", *syn.APPEARANCE_CLASSES)}
        plain = np.minimum(np.abs(clips["moving"] - clips["appearance_dots"]).max(-1),
                           np.abs(clips["still"] - clips["appearance_dots"]).max(-1))
        assert (plain > 12).mean(axis=(1, 2)).min() > 0.15  # the actor alone could not change this much
        for i, a in enumerate(syn.APPEARANCE_CLASSES):
            for b in syn.APPEARANCE_CLASSES[i + 1:]:
                differ = (np.abs(clips[a] - clips[b]).max(-1) > 12).mean(axis=(1, 2))
                assert differ.min() > 0.15, (a, b, differ)


def test_difficulty_sets_size_clutter_and_noise():
    for level, style in syn.STYLES.items():
        scenes = [syn.sample_scene("moving", s, FRAMES, 64, level) for s in range(20)]
        radii = np.array([s.actor.radius[0] / 64 for s in scenes])
        assert (radii >= style.actor_radius[0]).all() and (radii <= style.actor_radius[1]).all()
        assert all(style.distractors[0] <= len(s.sprites) - 1 <= style.distractors[1] for s in scenes)
        assert all(style.noise[0] <= s.noise_sigma <= style.noise[1] for s in scenes)
    assert syn.DEFAULT_DIFFICULTY in syn.STYLES
    easy, hard = syn.render_video("still", 1, 4, 64, "easy"), syn.render_video("still", 1, 4, 64, "hard")
    assert np.abs(np.diff(easy.astype(float), axis=0)).mean() < np.abs(np.diff(hard.astype(float), axis=0)).mean()
    with pytest.raises(ValueError, match="unknown difficulty 'extreme'.*easy"):
        syn.render_video("still", 1, difficulty="extreme")


def test_written_mp4_decodes_to_the_rendered_frames_in_order(tmp_path):
    clip = syn.render_video("move_left_to_right", 21, FRAMES, SIZE)
    for codec in ("libx264", "mpeg4"):
        path = syn.write_video(tmp_path / f"{codec}.mp4", clip, codec=codec)
        decoded = decode(path)
        assert decoded.shape == clip.shape
        error = np.abs(decoded.astype(float) - clip)
        assert error.mean() < 8, (codec, error.mean())  # mostly yuv420p's halved colour resolution
        # Each decoded frame is nearest to its own rendered frame: the order (the label) survives encoding.
        dist = np.abs(decoded[:, None].astype(float) - clip[None]).mean(axis=(2, 3, 4))
        assert (dist.argmin(axis=1) == np.arange(FRAMES)).all()
    with av.open(str(tmp_path / "libx264.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    with pytest.raises(ValueError, match="even"):
        syn.write_video(tmp_path / "odd.mp4", clip[:, :47])
    with pytest.raises(ValueError, match="uint8"):
        syn.write_video(tmp_path / "float.mp4", clip.astype(np.float32))


CLASSES_SMALL = ["move_left_to_right", "move_right_to_left", "still", "appearance_dots"]


def small_dataset(root, **kwargs):
    args = {"classes": CLASSES_SMALL, "videos_per_class": 5, "frames": 8, "size": 32, "seed": 3,
            "splits": "train=0.6,val=0.4", "workers": 1, **kwargs}
    return syn.generate_dataset(root, **args)


def test_generate_dataset_writes_a_balanced_deterministic_folder_per_class_layout(tmp_path):
    manifest = small_dataset(tmp_path / "a")
    root = tmp_path / "a"
    assert manifest["classes"] == sorted(CLASSES_SMALL)
    assert (root / "classes.txt").read_text().split() == sorted(CLASSES_SMALL)
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["counts"] == {"train": dict.fromkeys(sorted(CLASSES_SMALL), 3),
                                  "val": dict.fromkeys(sorted(CLASSES_SMALL), 2)}
    assert manifest["reversal_pairs"] == [["move_left_to_right", "move_right_to_left"]]
    assert manifest["appearance_classes"] == ["appearance_dots"]
    assert manifest["reverse_of"]["move_left_to_right"] == "move_right_to_left"
    assert manifest["reverse_of"]["still"] == "still"
    assert manifest["hflip_of"]["move_right_to_left"] == "move_left_to_right"
    for split, per_class in manifest["counts"].items():
        for name, n in per_class.items():
            files = sorted(os.listdir(root / split / name))
            assert len(files) == n and all(f.endswith(".mp4") for f in files)
    assert len(manifest["videos"]) == manifest["num_videos"] == 20
    for video in manifest["videos"]:
        assert video["label"] == manifest["classes"].index(video["class"])
        assert video["path"] == f"{video['split']}/{video['class']}/{video['index']:05d}.mp4"
        assert video["seed"] == syn.video_seed(3, video["class"], video["index"])
        frames = decode(root / video["path"])
        assert frames.shape == (8, 32, 32, 3)
        rendered = syn.render_video(video["class"], video["seed"], 8, 32, manifest["settings"]["difficulty"])
        assert np.abs(frames.astype(float) - rendered).mean() < 8

    # The same settings in two processes: the very same files.
    other = small_dataset(tmp_path / "b", workers=2)
    assert [v["sha256"] for v in other["videos"]] == [v["sha256"] for v in manifest["videos"]]
    assert other["settings"] == manifest["settings"]

    # A finished dataset is reused, not rewritten; other settings or a foreign folder are refused.
    stamp = os.stat(root / manifest["videos"][0]["path"]).st_mtime_ns
    assert small_dataset(root) == manifest
    assert os.stat(root / manifest["videos"][0]["path"]).st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other settings.*seed"):
        small_dataset(root, seed=4)
    with pytest.raises(FileExistsError, match="other settings.*difficulty"):
        small_dataset(root, difficulty="hard")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        small_dataset(tmp_path / "c")


def test_splits_and_bad_arguments_get_clear_errors(tmp_path):
    assert syn.parse_splits("train=0.7, val=0.2,test=0.1") == {"train": 0.7, "val": 0.2, "test": 0.1}
    assert syn._split_counts({"train": 0.7, "val": 0.2, "test": 0.1}, 10) == {"train": 7, "val": 2, "test": 1}
    assert syn._split_counts({"train": 0.75, "val": 0.25}, 24) == {"train": 18, "val": 6}
    assert sum(syn._split_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 7).values()) == 7
    for bad, message in [("train=0.7,val=0.2", "sum to 1"), ("train:0.5,val=0.5", "NAME=FRACTION"),
                         ("tr/ain=0.5,val=0.5", "folder name"), ("train=1.5,val=-0.5", "> 0"), ("", "empty")]:
        with pytest.raises(ValueError, match=message):
            syn.parse_splits(bad)
    with pytest.raises(ValueError, match="no video"):
        syn._split_counts({"train": 0.9, "val": 0.1}, 4)
    with pytest.raises(ValueError, match="unknown synthetic class 'sideways'.*move_left_to_right"):
        syn.render_video("sideways", 0)
    with pytest.raises(ValueError, match="even"):
        syn.render_video("still", 0, 8, 33)
    with pytest.raises(ValueError, match="frames"):
        syn.render_video("still", 0, 1, 32)
    with pytest.raises(ValueError, match="seed"):
        syn.render_video("still", -1)
    with pytest.raises(ValueError, match="repeat"):
        syn.generate_dataset(tmp_path / "x", classes=["still", "still"])
    with pytest.raises(ValueError, match="codec"):
        syn.generate_dataset(tmp_path / "x", codec="vp9")
    assert not (tmp_path / "x").exists()  # arguments are checked before anything is written


def test_synth_command_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--output", str(out), "--classes", "appear,disappear", "moving", "--videos-per-class", "2",
                 "--frames", "6", "--size", "32", "--splits", "train=0.5,val=0.5", "--workers", "1",
                 "--difficulty", "normal"]) == 0
    assert "6 videos (train 3, val 3) of 3 classes" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["appear", "disappear", "moving"]
    assert manifest["settings"]["frames"] == 6 and manifest["settings"]["codec"] == "libx264"
    assert manifest["settings"]["difficulty"] == "normal"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == sorted(
        v["path"] for v in manifest["videos"])
    assert decode(out / manifest["videos"][0]["path"]).shape == (6, 32, 32, 3)

    assert main(["synth", "--list-classes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in syn.ALL_CLASSES) and "reversed: move_right_to_left" in listing
    assert main(["synth", "--output", str(tmp_path / "bad"), "--classes", "jump"]) == 2
    assert "unknown synthetic class 'jump'" in capsys.readouterr().err
    assert main(["synth"]) == 2
    assert "--output is required" in capsys.readouterr().err
