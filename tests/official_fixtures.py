"""Deterministic stand-ins for the official TDN / TSM releases: checkpoints, clips and reference logits.

The reference logits in ``fixtures/official/*.json`` were computed by the official code on exactly
these weights and clips, so every value here must come out bit for bit the same on every machine.
That is why all randomness is NumPy's PCG64 (a fixed, documented stream), drawn in a fixed order,
and why the float arithmetic below keeps its operand types and evaluation order on purpose.

    ckpt = official_checkpoint("tdn_resnet50", seed=0, num_classes=174)  # as torch.load returns it
    clip = frames(batch=2, num_segments=8, size=112, seed=1)            # uint8 [B, T*5, 3, H, W]
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
FRAMES_PER_SEGMENT = 5  # the official TDN window; TSM uses its centre frame
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class OfficialKey:
    """One state_dict entry of an official model, named without the ``module.`` wrapper prefix."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def official_keys(arch: str) -> list[OfficialKey]:
    """The state_dict entries of the official ``arch`` (``tdn_resnet50``, ``tdn_resnet101``, ``tsm_resnet50``),
    in the official order, read from ``fixtures/official/<arch>.tsv``."""
    keys = []
    for line in (FIXTURES / f"{arch}.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")
        keys.append(OfficialKey(name, tuple(int(d) for d in shape.strip("[]").split(",") if d.strip()), dtype))
    return keys


def reference(name: str) -> dict[str, Any]:
    """A reference-logits file from ``fixtures/official`` (``tdn_resnet50_t8.json``, ...)."""
    return json.loads((FIXTURES / name).read_text())


# --- weights --------------------------------------------------------------------------------------
def _is_last_bn_of_a_block(name: str) -> bool:
    """``<...>.<block index>.bn3.weight``: the BatchNorm that closes a bottleneck's residual branch."""
    parts = name.split(".")
    return len(parts) >= 4 and parts[-1] == "weight" and parts[-2] == "bn3" and parts[-3].isdecimal()


def _values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Float64 draws for one tensor; the distribution depends on what the tensor is (its leaf name).

    Untrained but realistic: BN statistics away from the identity, non-zero biases, He-scaled kernels,
    so that every entry of the checkpoint changes the logits and a mis-mapped key shows.
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return rng.uniform(0.5, 2.0, shape)
    if leaf == "running_mean":
        return rng.normal(0.0, 0.2, shape)
    if len(shape) == 1:  # BatchNorm affines and conv / linear biases
        if _is_last_bn_of_a_block(name):
            # small, so the residual sums (and the activations) stay bounded through 50-101 layers
            return rng.uniform(0.05, 0.25, shape)
        if leaf == "weight":
            return rng.uniform(0.5, 1.5, shape)
        return rng.normal(0.0, 0.1, shape)
    fan_in = int(np.prod(shape[1:]))
    return rng.standard_normal(shape) * (2.0 / fan_in) ** 0.5  # He init


def official_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The tensor stored under ``name`` (no ``module.`` prefix): its own PCG64 stream, seeded with
    ``[seed, crc32(name)]``, so each value depends only on the seed and the key, not on the key order."""
    if name.endswith(".num_batches_tracked"):
        return torch.tensor(1000, dtype=torch.int64)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return torch.from_numpy(_values(rng, name, shape).astype(np.float32))


def official_state_dict(arch: str, seed: int = 0, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """The unwrapped official model's state_dict; ``num_classes`` resizes the classifier ``new_fc``."""
    state = {}
    for key in official_keys(arch):
        shape = key.shape
        if num_classes is not None and key.name.startswith("new_fc."):
            shape = (num_classes, *shape[1:])
        state[key.name] = official_tensor(key.name, shape, seed)
    return state


def official_checkpoint(arch: str, seed: int = 0, num_classes: int | None = None) -> dict[str, Any]:
    """What ``torch.load`` returns for a ``best.pth.tar`` written by the official ``main.py``: the model was
    wrapped in (Distributed)DataParallel, so every key starts with ``module.``."""
    state = official_state_dict(arch, seed, num_classes)
    return {
        "epoch": 60,
        "arch": arch.split("_", 1)[1],  # the official scripts record the backbone name only
        "state_dict": {f"module.{name}": value for name, value in state.items()},
        "best_prec1": 0.0,
    }


# --- clips ----------------------------------------------------------------------------------------
def frames(batch: int, num_segments: int, size: int, seed: int = 1) -> torch.Tensor:
    """uint8 frames ``[B, T*5, 3, H, W]``: a grey-ish background, a Gaussian blob drifting at constant
    velocity and pixel noise, so consecutive frames differ smoothly (TDN's frame differences are non-zero)."""
    rng = np.random.default_rng(seed)
    count = num_segments * FRAMES_PER_SEGMENT
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    two_sigma_sq = 2 * (0.12 * size) ** 2
    out = np.empty((batch, count, 3, size, size), dtype=np.uint8)
    for b in range(batch):
        # Draw order is part of the fixture: colour, start, velocity, then each frame's noise.
        colour = rng.uniform(40, 200, (3, 1, 1))
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        vx, vy = rng.normal(0, 0.02, 2) * size
        for t in range(count):
            # cx, vx, ... are NumPy float64 scalars, so the grid arithmetic runs in float64 (NEP 50).
            blob = np.exp(-((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2) / two_sigma_sq)
            image = colour + 80 * blob[None] + rng.normal(0, 8, (3, size, size))
            out[b, t] = np.clip(image, 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


def normalise(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, N, 3, H, W]`` -> float, scaled to [0, 1] and ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    return (clip.float() / 255.0 - mean) / std


def official_input(batch: int, num_segments: int, size: int, seed: int = 1) -> torch.Tensor:
    """The official TDN model's input ``[B, T*5*3, H, W]`` (segment-major, RGB last) for ``frames(...)``."""
    x = normalise(frames(batch, num_segments, size, seed))
    return x.reshape(batch, num_segments * FRAMES_PER_SEGMENT * 3, size, size)
