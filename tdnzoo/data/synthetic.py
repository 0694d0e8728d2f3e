"""A procedural video dataset whose classes need temporal order to tell apart, written as mp4 files.

Every clip shows a textured background, a few distractor shapes and one *actor*: the shape the
class is about, marked with a contrasting dot (which also makes its rotation visible). The classes:

* **time-reversal pairs** (``kind="reversal_pair"``): ``move_left_to_right`` / ``move_right_to_left``,
  ``move_top_to_bottom`` / ``move_bottom_to_top``, ``approach`` / ``recede`` (the actor grows /
  shrinks), ``rotate_clockwise`` / ``rotate_counterclockwise``, ``appear`` / ``disappear``. The second
  class of a pair is rendered as the first one's clip played backwards, so a time-reversed clip of one
  class *is* a clip of its partner, frame for frame, and no single frame (nor any order-free summary
  of the frames, such as TSN's average) can tell a pair apart.
* **motion** (``kind="motion"``): ``moving`` (the actor drifts in a random direction) and ``still``
  (the same scene, the actor frozen at a random point of that path): one frame cannot separate them.
* **appearance controls** (``kind="appearance"``): ``appearance_checkerboard``, ``appearance_stripes``,
  ``appearance_dots``, ``appearance_grid``: a backdrop pattern, visible in any frame, names the class (the
  other classes' backgrounds are smooth); all four share one motion distribution for the actor (half
  ``moving``, half ``still``), so motion carries no label.

Shapes, colours, backgrounds, distractors, speeds, start times, camera jitter and pixel noise are
random, drawn from the seed alone: the same ``(class, seed, frames, size, difficulty)`` gives the same
uint8 array. ``difficulty`` (:data:`STYLES`: ``easy``, ``normal``, ``hard``) sets how big the actor is and
how much clutter, texture, noise and shake surround it. Each video's seed comes from
``(dataset seed, class name, index)``, so workers can render in any order.

A horizontally mirrored clip belongs to :data:`HFLIP_OF` of its class (left/right and clockwise classes
swap), so training with flips must swap those labels.

Example:
    >>> from tdnzoo.data.synthetic import render_video, generate_dataset, REVERSE_OF
    >>> clip = render_video("move_left_to_right", seed=3)            # uint8 [16, 64, 64, 3]
    >>> (render_video(REVERSE_OF["move_left_to_right"], seed=3) == clip[::-1]).all()
    True
    >>> manifest = generate_dataset("synth", videos_per_class=8)       # synth/{train,val}/<class>/*.mp4
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ALL_CLASSES",
    "APPEARANCE_CLASSES",
    "CLASSES",
    "DEFAULT_CLASSES",
    "DEFAULT_DIFFICULTY",
    "DEFAULT_FRAMES",
    "DEFAULT_SIZE",
    "DEFAULT_SPLITS",
    "DEFAULT_VIDEOS_PER_CLASS",
    "GENERATOR_VERSION",
    "HFLIP_OF",
    "KINDS",
    "MOTION_CLASSES",
    "REVERSAL_PAIRS",
    "REVERSE_OF",
    "Scene",
    "Sprite",
    "STYLES",
    "Style",
    "SynthClass",
    "generate_dataset",
    "parse_splits",
    "render_scene",
    "render_video",
    "sample_scene",
    "video_seed",
    "write_video",
]

_logger = logging.getLogger(__name__)

# Bump when rendering changes, so that a manifest tells which generator made its videos.
GENERATOR_VERSION = 1
DEFAULT_FRAMES = 16
DEFAULT_SIZE = 64
DEFAULT_VIDEOS_PER_CLASS = 48
DEFAULT_SPLITS = {"train": 0.75, "val": 0.25}
DEFAULT_FPS = 12
# x264 constant-rate factor: low enough that one-pixel-per-frame motion and the marker dot survive.
DEFAULT_CRF = 12
MANIFEST = "manifest.json"
KINDS = ("reversal_pair", "motion", "appearance")


@dataclass(frozen=True)
class SynthClass:
    """One class of the synthetic dataset.

    Args:
        name: folder name and label.
        kind: ``"reversal_pair"``, ``"motion"`` or ``"appearance"``.
        reverse_of: the class a time-reversed clip of this class belongs to (itself for classes whose
            distribution reversal leaves unchanged: ``moving``, ``still`` and the appearance classes).
        description: what happens in the clip.
        hflip_of: the class a left-right mirrored clip belongs to (``move_left_to_right`` and ``rotate_clockwise``
            swap with their partners; the rest stay). Training with horizontal flips must swap these labels.
    """

    name: str
    kind: str
    reverse_of: str
    description: str
    hflip_of: str = ""

    def __post_init__(self) -> None:
        if not self.hflip_of:
            object.__setattr__(self, "hflip_of", _HFLIP.get(self.name, self.name))


_HFLIP = {"move_left_to_right": "move_right_to_left", "move_right_to_left": "move_left_to_right",
          "rotate_clockwise": "rotate_counterclockwise", "rotate_counterclockwise": "rotate_clockwise"}
_PAIRS = [
    ("move_left_to_right", "the marked shape moves from left to right",
     "move_right_to_left", "the marked shape moves from right to left"),
    ("move_top_to_bottom", "the marked shape moves down",
     "move_bottom_to_top", "the marked shape moves up"),
    ("approach", "the marked shape grows, as if coming closer",
     "recede", "the marked shape shrinks, as if moving away"),
    ("rotate_clockwise", "the marked shape turns clockwise",
     "rotate_counterclockwise", "the marked shape turns counter-clockwise"),
    ("appear", "the marked shape fades in", "disappear", "the marked shape fades out"),
]


def _build_classes() -> dict[str, SynthClass]:
    out: dict[str, SynthClass] = {}
    for a, da, b, db in _PAIRS:
        out[a] = SynthClass(a, "reversal_pair", b, da)
        out[b] = SynthClass(b, "reversal_pair", a, db)
    out["moving"] = SynthClass("moving", "motion", "moving", "the marked shape drifts in a random direction")
    out["still"] = SynthClass("still", "motion", "still", "the marked shape stays where it is")
    for pattern, what in (("checkerboard", "a checkerboard"), ("stripes", "stripes"), ("dots", "polka dots"),
                          ("grid", "a grid of lines")):
        name = f"appearance_{pattern}"
        out[name] = SynthClass(name, "appearance", name, f"the backdrop shows {what}; the marked shape drifts or stays")
    return out


CLASSES: dict[str, SynthClass] = _build_classes()
ALL_CLASSES: tuple[str, ...] = tuple(CLASSES)
REVERSE_OF: dict[str, str] = {name: c.reverse_of for name, c in CLASSES.items()}
HFLIP_OF: dict[str, str] = {name: c.hflip_of for name, c in CLASSES.items()}
# (forward, backward): the backward class is rendered as the forward class's clip reversed in time.
REVERSAL_PAIRS: tuple[tuple[str, str], ...] = tuple((a, b) for a, _, b, _ in _PAIRS)
MOTION_CLASSES: tuple[str, ...] = tuple(n for n, c in CLASSES.items() if c.kind == "motion")
APPEARANCE_CLASSES: tuple[str, ...] = tuple(n for n, c in CLASSES.items() if c.kind == "appearance")
DEFAULT_CLASSES: tuple[str, ...] = ALL_CLASSES
_BACKWARD = {b: a for a, b in REVERSAL_PAIRS}

_SHAPES = ("circle", "triangle", "square", "pentagon", "star", "cross", "ring")
# Scale on the circumradius so that every shape covers a similar area.
_SHAPE_SCALE = {"circle": 0.9, "triangle": 1.3, "square": 1.1, "pentagon": 1.0, "star": 1.3, "cross": 1.05,
                "ring": 1.0}
_PATTERNS = {f"appearance_{p}": p for p in ("checkerboard", "stripes", "dots", "grid")}


@dataclass(frozen=True)
class Style:
    """The ranges of a difficulty level's random draws. Sizes are fractions of the frame side; the background
    texture (amplitude of each of its waves) and pixel noise (sigma) are in 0-255 levels; shake in pixels;
    ``distractor_motion`` is the chance that a distractor drifts and spins (in a direction no class depends on)."""

    actor_radius: tuple[float, float]
    distractors: tuple[int, int]
    distractor_radius: tuple[float, float]
    distractor_motion: float
    texture: tuple[float, float]
    noise: tuple[float, float]
    shake: float


STYLES: dict[str, Style] = {
    "easy": Style(actor_radius=(0.15, 0.2), distractors=(0, 0), distractor_radius=(0.04, 0.07), distractor_motion=0.0,
                  texture=(0.0, 3.0), noise=(0.0, 1.0), shake=0.5),
    "normal": Style(actor_radius=(0.13, 0.18), distractors=(1, 2), distractor_radius=(0.04, 0.08),
                    distractor_motion=0.5, texture=(3.0, 10.0), noise=(1.0, 3.0), shake=1.0),
    "hard": Style(actor_radius=(0.09, 0.14), distractors=(1, 3), distractor_radius=(0.05, 0.09),
                  distractor_motion=0.5, texture=(6.0, 20.0), noise=(1.5, 6.0), shake=1.5),
}
# Small models trained from scratch on a few hundred clips memorise clutter instead of learning the task, so the
# default (the benchmark's) is the clean level; "normal" and "hard" are for larger budgets.
DEFAULT_DIFFICULTY = "easy"


def _style(difficulty: str) -> Style:
    if difficulty not in STYLES:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of: {', '.join(STYLES)}")
    return STYLES[difficulty]


# ----------------------------------------------------------------------------------------------------------
# Scenes: everything random about a clip, drawn from the seed; rendering is a pure function of the scene.


@dataclass
class Sprite:
    """A shape on screen. Per-frame arrays have length ``T``; positions are pixels, x right and y down.

    ``angle`` is in radians, growing clockwise on screen. ``marker`` draws the actor's contrasting dot.
    """

    shape: str
    colour: np.ndarray
    centre: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray
    marker: bool = False


@dataclass
class Scene:
    """What one clip shows. ``sprites`` are drawn in order; the actor is the last one.

    ``time_reversed`` scenes are rendered forward and played backwards (the second class of a pair).
    """

    class_name: str
    frames: int
    size: int
    background: dict
    jitter: np.ndarray
    noise_sigma: float
    noise_seed: int
    sprites: list[Sprite] = field(default_factory=list)
    time_reversed: bool = False

    @property
    def actor(self) -> Sprite:
        return self.sprites[-1]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float64) * 255.0


def _progress(rng: np.random.Generator, frames: int) -> np.ndarray:
    """0 -> 1 over a random window covering at least half of the clip, at a random start time."""
    span = max(frames - 1, 1)
    duration = rng.uniform(0.5, 1.0) * span
    start = rng.uniform(0.0, span - duration)
    t = np.arange(frames, dtype=np.float64)
    return np.clip((t - start) / duration, 0.0, 1.0)


def _segment_in_box(rng: np.random.Generator, dx: float, dy: float, lo: float, hi: float) -> np.ndarray:
    """A start point such that the segment from it along ``(dx, dy)`` stays inside ``[lo, hi]^2``."""
    x0 = rng.uniform(lo - min(0.0, dx), hi - max(0.0, dx))
    y0 = rng.uniform(lo - min(0.0, dy), hi - max(0.0, dy))
    return np.array([x0, y0])


def _drift(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """A straight path in a uniformly random direction: the ``moving`` class and its look-alikes."""
    theta = rng.uniform(0.0, 2 * math.pi)
    dist = rng.uniform(0.35, 0.6) * size
    d = dist * np.array([math.cos(theta), math.sin(theta)])
    start = _segment_in_box(rng, d[0], d[1], 0.15 * size, 0.85 * size)
    p = _progress(rng, frames)
    return start[None, :] + p[:, None] * d[None, :]


def _freeze(rng: np.random.Generator, path: np.ndarray) -> np.ndarray:
    """The position at a uniformly random time of ``path``, held for the whole clip.

    So a ``still`` frame is distributed like a ``moving`` frame at a random time."""
    u = rng.uniform(0.0, len(path) - 1)
    i = min(int(u), len(path) - 2) if len(path) > 1 else 0
    w = u - i
    point = path[i] * (1 - w) + path[min(i + 1, len(path) - 1)] * w
    return np.repeat(point[None, :], len(path), axis=0)


def _actor_motion(class_name: str, motion: np.random.Generator, frozen: np.random.Generator, frames: int,
                  size: int, radius: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (centre, radius, angle, alpha) of the actor of a forward or symmetric class."""
    ones = np.ones(frames)
    if class_name in ("move_left_to_right", "move_top_to_bottom"):
        dist = motion.uniform(0.35, 0.6) * size
        slant = motion.uniform(-0.15, 0.15) * dist
        d = np.array([dist, slant]) if class_name == "move_left_to_right" else np.array([slant, dist])
        start = _segment_in_box(motion, d[0], d[1], 0.15 * size, 0.85 * size)
        p = _progress(motion, frames)
        return start[None, :] + p[:, None] * d[None, :], radius * ones, angle * ones, ones
    if class_name in ("approach", "rotate_clockwise", "appear"):
        centre = np.repeat(motion.uniform(0.3, 0.7, size=2)[None, :] * size, frames, axis=0)
        if class_name == "approach":
            r0 = radius * motion.uniform(0.5, 0.7)
            growth = motion.uniform(1.8, 2.5)
            return centre, r0 * growth ** _progress(motion, frames), angle * ones, ones
        if class_name == "rotate_clockwise":
            turn = motion.uniform(0.5, 1.25) * math.pi
            return centre, radius * ones, angle + turn * _progress(motion, frames), ones
        start = motion.uniform(0.15, 0.6) * (frames - 1)
        fade = motion.uniform(1.0, 3.0)
        alpha = np.clip((np.arange(frames) - start) / fade, 0.0, 1.0)
        return centre, radius * ones, angle * ones, alpha
    # moving, still and the appearance classes share one path distribution.
    path = _drift(motion, frames, size)
    if class_name == "still" or (class_name in APPEARANCE_CLASSES and frozen.random() < 0.5):
        path = _freeze(frozen, path)
    return path, radius * ones, angle * ones, ones


def _check_class(class_name: str) -> SynthClass:
    if class_name not in CLASSES:
        raise ValueError(f"unknown synthetic class {class_name!r}; expected one of: {', '.join(ALL_CLASSES)}")
    return CLASSES[class_name]


def _check_geometry(frames: int, size: int) -> None:
    if not isinstance(frames, int | np.integer) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2 (motion needs two frames); got {frames!r}")
    if not isinstance(size, int | np.integer) or size < 16 or size % 2:
        raise ValueError(f"size must be an even integer >= 16 (yuv420p video needs even sides); got {size!r}")


def sample_scene(class_name: str, seed: int, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE,
                 difficulty: str = DEFAULT_DIFFICULTY) -> Scene:
    """Draw everything random about one clip of ``class_name`` from ``seed``.

    The scene (background, jitter, noise, distractors, the actor's looks) is drawn from streams that do not
    depend on the class, so two classes with the same seed differ only in what the actor does (or, for the
    appearance classes, in its shape). The second class of a reversal pair gets its partner's scene with
    ``time_reversed=True``.

    Args:
        class_name: one of :data:`ALL_CLASSES`.
        seed: a non-negative integer.
        frames: clip length ``T``.
        size: frame side in pixels (square, even).
        difficulty: a key of :data:`STYLES`.
    """
    _check_class(class_name)
    _check_geometry(frames, size)
    style = _style(difficulty)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if class_name in _BACKWARD:
        scene = sample_scene(_BACKWARD[class_name], seed, frames, size, difficulty)
        scene.class_name, scene.time_reversed = class_name, True
        return scene

    look_ss, motion_ss, frozen_ss, noise_ss, pattern_ss = np.random.SeedSequence(int(seed)).spawn(5)
    rng = np.random.default_rng(look_ss)
    t = np.arange(frames, dtype=np.float64)

    # Background: a muted base colour plus a few smooth plane waves, as a function of world coordinates so that
    # the camera can move over it.
    waves = []
    for _ in range(int(rng.integers(2, 5))):
        cycles, orient = rng.uniform(1.0, 6.0), rng.uniform(0.0, math.pi)
        k = 2 * math.pi * cycles / size
        direction = rng.normal(size=3) + 1.0  # mostly light/dark, with a tint
        waves.append({"k": [k * math.cos(orient), k * math.sin(orient)], "phase": float(rng.uniform(0, 2 * math.pi)),
                      "colour": (direction / np.linalg.norm(direction) * rng.uniform(*style.texture)).tolist()})
    background = {"base": _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.55)).tolist(),
                  "waves": waves, "pattern": None}
    if class_name in _PATTERNS:  # the appearance classes' backdrop, from its own stream
        prng = np.random.default_rng(pattern_ss)
        background["pattern"] = {
            "kind": _PATTERNS[class_name], "angle": float(prng.uniform(0, math.pi)),
            "period": float(prng.uniform(0.16, 0.26) * size), "offset": prng.uniform(0, 1, size=2).tolist(),
            "colour": _hsv(prng.random(), prng.uniform(0.1, 0.5), prng.uniform(0.6, 0.85)).tolist(),
            "strength": float(prng.uniform(0.5, 0.8))}

    # Camera shake: a random sinusoid per axis (time-reversible in distribution) plus a little per-frame jitter.
    amp = rng.uniform(0.0, style.shake)
    jitter = np.stack([amp * np.sin(rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * math.pi)) for _ in range(2)], 1)
    jitter += rng.normal(scale=0.15, size=(frames, 2))
    noise_sigma = float(rng.uniform(*style.noise))

    sprites = []
    for _ in range(int(rng.integers(style.distractors[0], style.distractors[1] + 1))):
        centre0 = rng.uniform(0.1, 0.9, size=2) * size
        moves = rng.random() < style.distractor_motion
        theta, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.25) * size * moves
        centre = centre0 + (t / max(frames - 1, 1))[:, None] * dist * np.array([math.cos(theta), math.sin(theta)])
        spin = rng.uniform(-0.08, 0.08) * moves
        sprites.append(Sprite(
            shape=str(rng.choice(_SHAPES)), colour=_hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)),
            centre=centre, radius=np.full(frames, rng.uniform(*style.distractor_radius) * size),
            angle=rng.uniform(0, 2 * math.pi) + spin * t, alpha=np.ones(frames)))

    # The actor: a saturated, bright shape with a contrasting dot.
    colour = _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.65, 1.0))
    shape = str(rng.choice(_SHAPES))
    radius = rng.uniform(*style.actor_radius) * size
    angle = rng.uniform(0, 2 * math.pi)
    centre, radii, angles, alpha = _actor_motion(class_name, np.random.default_rng(motion_ss),
                                                 np.random.default_rng(frozen_ss), frames, size, radius, angle)
    sprites.append(Sprite(shape=shape, colour=colour, centre=centre, radius=radii, angle=angles, alpha=alpha,
                          marker=True))
    return Scene(class_name=class_name, frames=frames, size=size, background=background, jitter=jitter,
                 noise_sigma=noise_sigma, noise_seed=int(noise_ss.generate_state(1, np.uint64)[0] >> 1),
                 sprites=sprites)


# ----------------------------------------------------------------------------------------------------------
# Rendering: soft-edged shapes (about one pixel of anti-aliasing) composited over the background.


def _polar_polygon(theta: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """Boundary radius, in direction ``theta``, of a star-shaped polygon with vertices at equally spaced angles
    ``2 pi k / n`` and radii ``radii[k]``."""
    n = len(radii)
    step = 2 * math.pi / n
    theta = np.mod(theta, 2 * math.pi)
    k = np.minimum((theta // step).astype(np.int64), n - 1)
    r = np.asarray(radii, dtype=np.float64)
    r1, r2 = r[k], r[(k + 1) % n]
    a = theta - k * step
    return r1 * r2 * math.sin(step) / (r1 * np.sin(a) + r2 * np.sin(step - a))


def _inside(shape: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance (pixels, > 0 inside, approximate) of local coordinates ``(u, v)`` to the shape's edge."""
    d = np.hypot(u, v)
    if shape == "circle":
        return radius - d
    if shape == "ring":
        return np.minimum(radius - d, d - 0.55 * radius)
    if shape == "cross":
        au, av = np.abs(u) / radius, np.abs(v) / radius
        arm = 0.36
        return np.maximum(np.minimum(1 - au, arm - av), np.minimum(arm - au, 1 - av)) * radius
    theta = np.arctan2(v, u)
    if shape == "star":
        boundary = _polar_polygon(theta, [1.0, 0.45] * 5)
    else:
        sides = {"triangle": 3, "square": 4, "pentagon": 5}[shape]
        boundary = _polar_polygon(theta, [1.0] * sides)
    return boundary * radius - d


def _pattern(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Opacity (0..1, soft-edged) of an appearance class's backdrop pattern at world coordinates ``(x, y)``."""
    period = p["period"]
    c, s = math.cos(p["angle"]), math.sin(p["angle"])
    a, b = (c * x + s * y) / period + p["offset"][0], (-s * x + c * y) / period + p["offset"][1]
    # Signed distance to the nearest cell centre along each axis, in pixels.
    da, db = (np.mod(a, 1.0) - 0.5) * period, (np.mod(b, 1.0) - 0.5) * period
    if p["kind"] == "stripes":
        mask = np.clip(0.25 * period - np.abs(da) + 0.5, 0.0, 1.0)
    elif p["kind"] == "checkerboard":
        mask = np.clip(0.5 + 2.0 * np.sin(2 * math.pi * a) * np.sin(2 * math.pi * b) * period / 8, 0.0, 1.0)
    elif p["kind"] == "dots":
        mask = np.clip(0.28 * period - np.hypot(da, db) + 0.5, 0.0, 1.0)
    else:  # grid: lines along cell borders, 2 pixels wide
        border = np.minimum(0.5 * period - np.abs(da), 0.5 * period - np.abs(db))
        mask = np.clip(1.5 - border, 0.0, 1.0)
    return mask * p["strength"]


def _span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Pixel indices ``[a, b)`` whose centres (``index + 0.5``) may fall in ``[lo, hi]``, clipped to the frame."""
    return max(0, math.floor(lo - 0.5)), min(size, math.ceil(hi - 0.5) + 1)


def _frame(scene: Scene, t: int, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    x, y = gx + scene.jitter[t, 0], gy + scene.jitter[t, 1]
    bg = scene.background
    img = np.broadcast_to(np.asarray(bg["base"], dtype=np.float64), (*gx.shape, 3)).copy()
    for w in bg["waves"]:
        img += np.sin(w["k"][0] * x + w["k"][1] * y + w["phase"])[..., None] * np.asarray(w["colour"])
    if bg["pattern"] is not None:
        mask = _pattern(bg["pattern"], x, y)[..., None]
        img = img * (1 - mask) + np.asarray(bg["pattern"]["colour"]) * mask
    size = gx.shape[0]
    for sp in scene.sprites:
        a = float(sp.alpha[t])
        if a <= 0.0:
            continue
        radius = float(sp.radius[t]) * _SHAPE_SCALE[sp.shape]
        cx, cy = float(sp.centre[t, 0]), float(sp.centre[t, 1])
        # Only the pixels near the shape (its circumcircle, which holds the marker too, plus the soft edge).
        reach = 1.1 * radius + 2.0
        c0, c1 = _span(cx - scene.jitter[t, 0] - reach, cx - scene.jitter[t, 0] + reach, size)
        r0, r1 = _span(cy - scene.jitter[t, 1] - reach, cy - scene.jitter[t, 1] + reach, size)
        if c0 >= c1 or r0 >= r1:
            continue
        dx, dy = x[r0:r1, c0:c1] - cx, y[r0:r1, c0:c1] - cy
        c, s = math.cos(sp.angle[t]), math.sin(sp.angle[t])
        u, v = c * dx + s * dy, -s * dx + c * dy  # world -> the shape's own (rotated) frame
        cover = (np.clip(_inside(sp.shape, u, v, radius) + 0.5, 0.0, 1.0) * a)[..., None]
        patch = img[r0:r1, c0:c1]
        patch = patch * (1 - cover) + sp.colour * cover
        if sp.marker:
            # The dot sits off-centre along the shape's own x axis: it names the actor and shows its rotation.
            luminance = float(sp.colour @ np.array([0.299, 0.587, 0.114]))
            dot = np.full(3, 20.0) if luminance > 128 else np.full(3, 245.0)
            dd = np.hypot(u - 0.5 * float(sp.radius[t]), v)
            cover = (np.clip(0.25 * float(sp.radius[t]) - dd + 0.5, 0.0, 1.0) * a)[..., None]
            patch = patch * (1 - cover) + dot * cover
        img[r0:r1, c0:c1] = patch
    return img


def render_scene(scene: Scene) -> np.ndarray:
    """Render a :class:`Scene` to uint8 ``[T, H, W, 3]`` RGB frames (played backwards if ``time_reversed``)."""
    size, frames = scene.size, scene.frames
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    noise = np.random.default_rng(scene.noise_seed).normal(scale=scene.noise_sigma, size=(frames, size, size, 3))
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        out[t] = np.clip(np.rint(_frame(scene, t, gx, gy) + noise[t]), 0, 255)
    return np.ascontiguousarray(out[::-1]) if scene.time_reversed else out


def render_video(class_name: str, seed: int, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE,
                 difficulty: str = DEFAULT_DIFFICULTY) -> np.ndarray:
    """One clip of ``class_name``: uint8 ``[frames, size, size, 3]`` RGB, a pure function of the arguments.

    For a reversal pair, ``render_video(REVERSE_OF[c], s)`` equals ``render_video(c, s)[::-1]`` exactly.

    Args:
        class_name: one of :data:`ALL_CLASSES`.
        seed: a non-negative integer (see :func:`video_seed` for the dataset's per-video seeds).
        frames: clip length.
        size: frame side in pixels (even, >= 16).
        difficulty: a key of :data:`STYLES` (how big the actor is, how much clutter, texture and noise).

    Example:
        >>> render_video("rotate_clockwise", 0, frames=8, size=32).shape
        (8, 32, 32, 3)
    """
    return render_scene(sample_scene(class_name, seed, frames, size, difficulty))


def video_seed(seed: int, class_name: str, index: int) -> int:
    """The seed of video ``index`` of ``class_name`` in a dataset generated with ``seed`` (a 63-bit integer).

    Derived by hashing, so each video is independent of the others and of the order they are made in.
    """
    key = zlib.crc32(class_name.encode("utf-8"))
    return int(np.random.SeedSequence([int(seed), key, int(index)]).generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------------------
# Writing videos and the dataset.


def _default_codec() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV built without x264: MPEG-4 part 2 is in every FFmpeg build
        return "mpeg4"


def _x264_cpu_params() -> dict[str, str]:
    """x264 options that keep its output a function of its input on CPUs with AVX-512.

    Measured with x264 core 165 on an AMD EPYC (Zen 4): with its AVX-512 routines, encoding the same frames
    twice in one process gave different bytes (and pixels off by up to 10 levels) for about one video in ten;
    capped at AVX2, never. So on such CPUs x264 is given every instruction set up to AVX2 that the CPU has.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as cpu
    except ImportError:  # numpy < 2 or a future layout: leave x264's own detection alone
        return {}
    if not cpu.get("AVX512F"):
        return {}
    x264_names = (("MMX2", "SSE"), ("SSE", "SSE"), ("SSE2", "SSE2"), ("SSE2Fast", "SSE2"), ("SSE3", "SSE3"),
                  ("SSSE3", "SSSE3"), ("SSE4.1", "SSE41"), ("SSE4.2", "SSE42"), ("LZCNT", "LZCNT"), ("AVX", "AVX"),
                  ("FMA3", "FMA3"), ("BMI1", "BMI"), ("BMI2", "BMI2"), ("AVX2", "AVX2"))
    return {"x264-params": "asm=" + ",".join(name for name, feature in x264_names if cpu.get(feature))}


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = DEFAULT_FPS, codec: str = "auto",
                crf: int = DEFAULT_CRF) -> Path:
    """Encode uint8 ``[T, H, W, 3]`` RGB frames as an mp4 file (yuv420p) with PyAV.

    Args:
        path: the ``.mp4`` file to write.
        frames: uint8 RGB frames with even ``H`` and ``W``.
        fps: frame rate stored in the file.
        codec: ``"libx264"``, ``"mpeg4"`` or ``"auto"`` (x264 when PyAV has it).
        crf: x264 constant-rate factor (lower is better quality); ``mpeg4`` uses a fixed high quantiser quality.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3]; got {frames.dtype} {list(frames.shape)}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p; got {frames.shape[1]}x{frames.shape[2]}")
    codec = _default_codec() if codec == "auto" else codec
    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # One encoder thread: the output then depends on nothing but the frames (x264 is deterministic per
        # thread count), and parallelism comes from encoding many videos at once.
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium", **_x264_cpu_params()}
        else:
            stream.codec_context.bit_rate = int(frames.shape[1] * frames.shape[2] * fps * 3)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def parse_splits(splits: str | Mapping[str, float]) -> dict[str, float]:
    """``"train=0.75,val=0.25"`` or a mapping -> ``{split: fraction}``; fractions must be positive and sum to 1."""
    if isinstance(splits, str):
        parsed: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in splits.split(","))):
            name, sep, value = part.partition("=")
            try:
                parsed[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"bad split {part!r} in {splits!r}; expected NAME=FRACTION, e.g. train=0.75,val=0.25")
        splits = parsed
    out = {str(k): float(v) for k, v in dict(splits).items()}
    if not out:
        raise ValueError("splits is empty; expected e.g. train=0.75,val=0.25")
    for name, frac in out.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"split name {name!r} must be a plain folder name (letters, digits, _ or -)")
        if not frac > 0:
            raise ValueError(f"split {name!r} has fraction {frac}; fractions must be > 0")
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1; got {out} (sum {sum(out.values()):g})")
    return out


def _split_counts(splits: dict[str, float], n: int) -> dict[str, int]:
    """Videos per class in each split: largest remainder, so the counts add up to ``n``."""
    raw = {k: f * n for k, f in splits.items()}
    counts = {k: int(math.floor(r)) for k, r in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], list(raw).index(k)))[: n - sum(counts.values())]:
        counts[k] += 1
    empty = [k for k, c in counts.items() if c == 0]
    if empty:
        raise ValueError(f"split(s) {empty} get no video with {n} videos per class and fractions {splits}; "
                         "use more videos per class or larger fractions")
    return counts


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_one(job: dict) -> tuple[str, str]:
    """Render, encode and hash one video (runs in a worker process)."""
    frames = render_video(job["class"], job["seed"], job["frames"], job["size"], job["difficulty"])
    final = Path(job["root"]) / job["path"]
    partial = final.with_name(f".{final.name}.partial")  # a crash never leaves a truncated .mp4 behind
    write_video(partial, frames, fps=job["fps"], codec=job["codec"], crf=job["crf"])
    os.replace(partial, final)
    return job["path"], _sha256(final)


def _resolve_classes(classes: Iterable[str] | None) -> list[str]:
    names = list(DEFAULT_CLASSES if classes is None else classes)
    for name in names:
        _check_class(name)
    if len(set(names)) != len(names):
        raise ValueError(f"classes repeat a name: {names}")
    if len(names) < 2:
        raise ValueError(f"a dataset needs at least 2 classes; got {names}")
    return sorted(names)  # folder-per-class readers number classes in sorted order


def generate_dataset(output: str | os.PathLike, *, classes: Iterable[str] | None = None,
                     videos_per_class: int = DEFAULT_VIDEOS_PER_CLASS, frames: int = DEFAULT_FRAMES,
                     size: int = DEFAULT_SIZE, seed: int = 0, difficulty: str = DEFAULT_DIFFICULTY,
                     splits: str | Mapping[str, float] = DEFAULT_SPLITS, fps: int = DEFAULT_FPS, codec: str = "auto",
                     crf: int = DEFAULT_CRF, workers: int | None = None, progress: bool = False) -> dict:
    """Write the dataset as ``output/<split>/<class>/<index>.mp4`` plus ``manifest.json`` and ``classes.txt``.

    Every class gets ``videos_per_class`` videos, divided among the splits in the same numbers for every class.
    Video ``i`` of class ``c`` is ``render_video(c, video_seed(seed, c, i), frames, size, difficulty)``, so the
    frames do not depend on ``workers``. ``manifest.json`` is written last: if ``output`` already holds a manifest with
    the same settings (and its files), that dataset is returned without rendering anything again.

    Args:
        output: folder to create (or an empty one).
        classes: class names (default :data:`DEFAULT_CLASSES`); labels follow their sorted order.
        videos_per_class: videos per class over all splits.
        frames: frames per video.
        size: frame side in pixels (even).
        seed: dataset seed.
        difficulty: a key of :data:`STYLES`.
        splits: ``{split: fraction}`` or ``"train=0.75,val=0.25"``.
        fps: frame rate stored in the files.
        codec: ``"auto"`` (libx264 when available, else mpeg4), ``"libx264"`` or ``"mpeg4"``.
        crf: x264 quality (lower is better).
        workers: processes (default: up to 8, one per CPU); 1 renders in this process.
        progress: show a progress bar.

    Returns:
        The manifest: ``settings``, ``classes`` (label order), ``class_info`` (kind, reverse_of, hflip_of,
        description per class), ``reverse_of``, ``hflip_of``, ``reversal_pairs``, ``appearance_classes``, ``counts`` (split -> class -> n) and
        ``videos`` (path, split, class, label, index, seed, sha256 per file).

    Example:
        >>> m = generate_dataset("synth", classes=["appear", "disappear"], videos_per_class=4,
        ...                      splits="train=0.5,val=0.5")
        >>> m["counts"]["val"]
        {'appear': 2, 'disappear': 2}
    """
    names = _resolve_classes(classes)
    if isinstance(videos_per_class, bool) or not isinstance(videos_per_class, int) or videos_per_class < 1:
        raise ValueError(f"videos_per_class must be a positive integer; got {videos_per_class!r}")
    _check_geometry(frames, size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    _style(difficulty)
    split_fracs = parse_splits(splits)
    counts = _split_counts(split_fracs, videos_per_class)
    if codec not in ("auto", "libx264", "mpeg4"):
        raise ValueError(f"codec must be 'auto', 'libx264' or 'mpeg4'; got {codec!r}")
    codec = _default_codec() if codec == "auto" else codec
    settings = {"generator_version": GENERATOR_VERSION, "classes": names, "videos_per_class": videos_per_class,
                "frames": frames, "size": size, "seed": seed, "difficulty": difficulty, "splits": split_fracs,
                "fps": fps, "codec": codec, "crf": crf}

    root = Path(output)
    existing = _reuse(root, settings)
    if existing is not None:
        return existing
    root.mkdir(parents=True, exist_ok=True)

    jobs, videos = [], []
    for label, name in enumerate(names):
        index = 0
        for split, n in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                path = f"{split}/{name}/{index:05d}.mp4"
                s = video_seed(seed, name, index)
                videos.append({"path": path, "split": split, "class": name, "label": label, "index": index, "seed": s})
                jobs.append({"class": name, "seed": s, "frames": frames, "size": size, "difficulty": difficulty,
                             "root": str(root),
                             "path": path, "fps": fps, "codec": codec, "crf": crf})
                index += 1

    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synth", unit="video")
    hashes: dict[str, str] = {}
    try:
        if workers == 1:
            results: Iterable[tuple[str, str]] = map(_make_one, jobs)
            for path, digest in results:
                hashes[path] = digest
                if bar is not None:
                    bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                for path, digest in pool.map(_make_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                    hashes[path] = digest
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
    for v in videos:
        v["sha256"] = hashes[v["path"]]

    import av

    from ..version import __version__

    manifest = {
        "format": "tdnzoo-synthetic",
        "settings": settings,
        "classes": names,
        "class_info": {n: {"kind": CLASSES[n].kind, "reverse_of": CLASSES[n].reverse_of,
                           "hflip_of": CLASSES[n].hflip_of, "description": CLASSES[n].description} for n in names},
        "reverse_of": {n: CLASSES[n].reverse_of for n in names},
        "hflip_of": {n: CLASSES[n].hflip_of for n in names},
        "reversal_pairs": [list(p) for p in REVERSAL_PAIRS if p[0] in names and p[1] in names],
        "appearance_classes": [n for n in names if CLASSES[n].kind == "appearance"],
        "counts": {split: {n: c for n in names} for split, c in counts.items()},
        "num_videos": len(videos),
        "software": {"tdnzoo": __version__, "av": av.__version__, "numpy": np.__version__},
        "videos": videos,
    }
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    tmp = root / f".{MANIFEST}.partial"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, root / MANIFEST)
    _logger.info("wrote %d videos to %s in %.1f s", len(videos), root, time.perf_counter() - started)
    return manifest


def _reuse(root: Path, settings: dict) -> dict | None:
    """The manifest of a finished dataset with these settings in ``root``; None if ``root`` is new or empty."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; choose another output folder")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        if any(root.iterdir()):
            raise FileExistsError(f"{root} is not empty and has no {MANIFEST} (an interrupted generation, or another "
                                  "folder); delete it or choose another output folder")
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("settings") != json.loads(json.dumps(settings)):
        old = manifest.get("settings", {})
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != json.loads(json.dumps(v))}
        raise FileExistsError(f"{root} holds a synthetic dataset made with other settings (existing, requested): "
                              f"{diff}; choose another output folder or delete it")
    missing = [v["path"] for v in manifest["videos"] if not (root / v["path"]).is_file()]
    if missing:
        raise FileExistsError(f"{root}/{MANIFEST} lists {len(missing)} missing videos (e.g. {missing[0]}); "
                              "delete the folder and generate again")
    _logger.info("reusing the synthetic dataset in %s", root)
    return manifest

