"""Clip transforms: one random draw per clip, the official crop rules, label-swapping flips."""
from __future__ import annotations

import logging

import pytest
import torch

from tdnzoo.data.transforms import (
    SOMETHING_FLIP_LABEL_MAP,
    MultiScaleCrop,
    RandomHorizontalFlip,
    ThreeCrop,
    eval_transform,
    fixed_crop_offsets,
    parse_views,
    train_transform,
)


def ramp_clip(t: int = 4, h: int = 48, w: int = 64) -> torch.Tensor:
    """float ``[T, 3, H, W]``: frame ``i`` is a shared random image plus ``i``."""
    base = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    return base + torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1)


def test_multiscale_crop_is_the_same_for_every_frame():
    clip = ramp_clip()
    crop = MultiScaleCrop(32)
    for seed in range(10):
        torch.manual_seed(seed)
        out = crop(clip)
        assert out.shape == (4, 3, 32, 32)
        # Same crop and resize for every frame: frames still differ by exactly their offset.
        for i in range(1, 4):
            torch.testing.assert_close(out[i] - out[0], torch.full_like(out[0], float(i)), atol=1e-4, rtol=0)


def test_multiscale_crop_uses_official_sizes_and_positions():
    crop = MultiScaleCrop(224)
    image = torch.zeros(1, 3, 256, 340)
    sides = [256, 224, 192, 168]  # int(256 * s) for 1, .875, .75, .66 (224 snaps to itself)
    expected = {(sides[j], sides[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    seen = set()
    torch.manual_seed(0)
    for _ in range(400):
        p = crop.make_params([image])
        w, h = p["width"], p["height"]
        assert (w, h) in expected
        assert (p["left"], p["top"]) in fixed_crop_offsets(340, 256, w, h)
        seen.add((w, h))
    assert seen == expected


def test_multiscale_crop_snaps_to_the_output_size():
    # sides within 3 pixels of the output size snap to it (official), others do not
    params = MultiScaleCrop(200, scales=(1.0,)).make_params([torch.zeros(1, 3, 202, 300)])
    assert (params["width"], params["height"]) == (200, 200)
    params = MultiScaleCrop(200, scales=(1.0,)).make_params([torch.zeros(1, 3, 203, 300)])
    assert (params["width"], params["height"]) == (203, 203)


def test_flip_is_all_or_nothing_and_swaps_mirrored_labels():
    clip = ramp_clip()
    flip = RandomHorizontalFlip(0.5, SOMETHING_FLIP_LABEL_MAP)
    outcomes = set()
    torch.manual_seed(0)
    for _ in range(30):
        out, label = flip(clip, 86)
        if torch.equal(out, clip):
            assert label == 86
            outcomes.add("kept")
        else:
            assert torch.equal(out, clip.flip(-1)) and label == 87
            outcomes.add("flipped")
    assert outcomes == {"kept", "flipped"}
    always = RandomHorizontalFlip(1.0, SOMETHING_FLIP_LABEL_MAP)
    assert [always(clip, k)[1] for k in (86, 87, 93, 94, 166, 167, 5)] == [87, 86, 94, 93, 167, 166, 5]
    assert int(always(clip, torch.tensor(93))[1]) == 94
    assert RandomHorizontalFlip(1.0)(clip, 86)[1] == 86  # no map: label untouched
    assert torch.equal(RandomHorizontalFlip(0.0)(clip), clip)


def test_train_transform_disables_flip_for_mirrored_classes_without_a_map(caplog):
    with caplog.at_level(logging.WARNING):
        t = train_transform(32, mirrored_classes=True)
    assert not any(isinstance(s, RandomHorizontalFlip) for s in t.transforms)
    assert "flip disabled" in caplog.text
    t = train_transform(32, mirrored_classes=True, label_map=SOMETHING_FLIP_LABEL_MAP)
    assert any(isinstance(s, RandomHorizontalFlip) for s in t.transforms)
    clip = torch.randint(0, 256, (4, 3, 40, 50), dtype=torch.uint8)
    out, label = t(clip, 166)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32 and label in (166, 167)


def test_eval_transform_follows_the_pretrained_cfg():
    cfg = {"input_size": (3, 64, 64), "crop_pct": 0.8, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    clip = torch.full((2, 3, 60, 120), 153, dtype=torch.uint8)  # 153 / 255 = 0.6
    out = eval_transform(cfg)(clip)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, torch.full_like(out, (0.6 - 0.5) / 0.25), atol=1e-4, rtol=0)

    class Model:  # anything with a pretrained_cfg
        pretrained_cfg = cfg

    three = eval_transform(Model(), num_crops=3)(clip)  # full resolution: crops of the resized 80 side
    assert three.shape == (3, 2, 3, 80, 80)
    assert eval_transform(Model(), num_crops=3, full_res=False)(clip).shape == (3, 2, 3, 64, 64)
    assert eval_transform(None)(clip).shape == (2, 3, 224, 224)  # defaults: 256 -> 224
    with pytest.raises(ValueError, match="num_crops"):
        eval_transform(cfg, num_crops=5)


def test_three_crop_positions():
    # value = column index, so a crop's first column tells where it starts
    cols = torch.arange(100, dtype=torch.float32).expand(2, 3, 40, 100)
    crops = ThreeCrop(40)(cols)
    assert crops.shape == (3, 2, 3, 40, 40)
    step = (100 - 40) // 4
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 4 * step, 2 * step]  # left, right, centre (official order)
    rows = torch.arange(100, dtype=torch.float32).view(100, 1).expand(2, 3, 100, 40)
    assert [int(c[0, 0, 0, 0]) for c in ThreeCrop(40)(rows)] == [0, 4 * step, 2 * step]  # portrait: top, bottom, centre


def test_parse_views():
    assert parse_views("10x3") == (10, 3)
    assert parse_views("1X1") == (1, 1)
    assert parse_views((2, 1)) == (2, 1)
    for bad in ("10x2", "x3", "ten", "0x1"):
        with pytest.raises(ValueError, match="views"):
            parse_views(bad)
