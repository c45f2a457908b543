"""The built-in demo dataset: synthetic untrimmed videos drawn with NumPy, encoded by ffmpeg.

Every action is a disc of a random colour from one palette, so colour says nothing about the
class; the five classes differ only in how the disc changes over time, in two pairs and one
more. A `blink` disc is on for 0.4 s, off for 0.4 s; a `glow` disc is still and half
transparent. A `jump` disc sits at one spot for 0.4 s, at another, diagonally across, for the
next 0.4 s; `twins` are two still half-transparent discs on two such spots. Each pair looks
the same averaged over any whole number of 0.8-s cycles, and a demo snippet (16 frames at 10
fps) holds two: the snippet's pooled vector cannot tell blink from glow nor jump from twins;
only how the frames inside the snippet differ can, which LoSA's temporal tokens keep. A
repeating action starts at a random point of its cycle. A `grow` disc grows over the whole
action, which snippet after snippet shows. Distractor discs sit still or drift vertically in
the gaps between actions, so a single frame cannot tell a growing disc from a still one, nor
where an action starts or ends. They never share the screen with an action: the demo's random
backbone mixes everything on screen into one vector per tubelet step, and a second disc there
would hide the class of the first (a linear probe of the temporal tokens told the five classes
apart in 81 % of snippets with distractors during actions, 93 % without).

The background is one static left-to-right colour gradient, the same in every video. It is
plain on purpose: the demo's backbone has random weights, and a random ViT's pooled
activations mostly follow the frame's mean colour. On a gradient, a disc changes that mean by
what it hides, so even where it is (a jump's spot) shows up in those activations.

The plan of a video (its length, actions and distractors) is a pure function of the seed,
subset and index, so the ground truth is exact and known without rendering anything.
"""

import math
import re
from dataclasses import dataclass

import numpy as np

from ..io import InputError

CLASSES = ("blink", "glow", "jump", "twins", "grow")
CYCLIC = ("blink", "jump")
PAIRED = ("jump", "twins")  # on two spots that never overlap
DISTRACTORS = ("still", "drift")
SUBSETS = {"training": "train", "testing": "test"}
# Square frames: the backbone sees all of them (it centre-crops to a square).
WIDTH, HEIGHT, FPS = 64, 64, 20
SPRITE = 37  # side of the square each disc is drawn in
RADIUS = (7.0, 18.0)  # smallest and largest disc radius, pixels
PAIRED_RADIUS = (7.0, 12.0)  # two spots >= 25 px apart: the discs never overlap
PERIOD = 16  # frames (0.8 s) of a blink or jump cycle: on (or at the first spot) for the first half
PALETTE = ("#ffd040", "#40e0ff", "#ff6080", "#a0ff60", "#f0f0f0", "#c080ff")
BACKGROUND = ("#102080", "#804010")  # left and right ends of the horizontal gradient


@dataclass(frozen=True)
class Disc:
    """One disc on screen during frames [first, last), moving from (x0, y0) to (x1, y1)."""

    kind: str  # a class name, or a distractor kind
    first: int
    last: int
    x0: int
    y0: int
    x1: int
    y1: int
    radius: float
    color: str
    phase: int = 0  # where in its cycle a repeating action starts, frames


@dataclass(frozen=True)
class VideoPlan:
    name: str
    subset: str
    frames: int
    seed: int
    actions: tuple
    distractors: tuple

    @property
    def duration(self):
        return self.frames / FPS


def video_name(subset, index):
    return f"demo_{SUBSETS[subset]}_{index:03d}"


def random_disc(rng, kind, first, last):
    """A disc of the given kind with a random colour, size and path that stays in the frame."""
    room_x, room_y = WIDTH - SPRITE, HEIGHT - SPRITE
    x0, y0 = int(rng.integers(0, room_x + 1)), int(rng.integers(0, room_y + 1))
    x1, y1 = x0, y0
    seconds = (last - first) / FPS
    if kind in PAIRED:  # spots in opposite corners of the room, on either diagonal
        third = room_x // 3
        x0, x1 = int(rng.integers(0, third + 1)), int(rng.integers(room_x - third, room_x + 1))
        y0, y1 = int(rng.integers(0, third + 1)), int(rng.integers(room_y - third, room_y + 1))
        if rng.random() < 0.5:
            y0, y1 = y1, y0
    elif kind == "drift":
        travel = int(np.clip(rng.uniform(2.5, 7.5) * seconds, 4, room_y))
        y0 = int(rng.integers(0, room_y - travel + 1))
        y1 = y0 + travel * int(rng.choice([-1, 1]))
        if y1 < 0:
            y0, y1 = y0 + travel, y0
    radius = float(np.round(rng.uniform(*(PAIRED_RADIUS if kind in PAIRED else RADIUS)), 1))
    color = PALETTE[int(rng.integers(len(PALETTE)))]
    phase = int(rng.integers(PERIOD)) if kind in CYCLIC else 0
    return Disc(kind, first, last, x0, y0, x1, y1, radius, color, phase)


def plan_video(seed, subset, index, min_seconds=20, max_seconds=40):
    """Lay out one video: non-overlapping actions of 1.5-8 s separated by 1-4 s gaps."""
    # 6 s leaves room for the longest first gap (4 s) and a shortest action.
    if not 6 <= min_seconds <= max_seconds:
        raise InputError(f"demo needs 6 <= min_seconds <= max_seconds; got {min_seconds}, {max_seconds}")
    rng = np.random.default_rng([seed, list(SUBSETS).index(subset), index])
    frames = int(rng.integers(min_seconds, max_seconds + 1)) * FPS
    actions, frame = [], 0
    while True:
        frame += int(rng.uniform(1, 4) * FPS)
        length = int(round(math.exp(rng.uniform(math.log(1.5), math.log(8))) * FPS))
        length = min(length, frames - FPS // 2 - frame)  # the last one ends 0.5 s before the end
        if length < FPS // 2:
            break
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        actions.append(random_disc(rng, kind, frame, frame + length))
        frame += length
    # Distractors go in the gaps between actions (each gap at most one), at least 1 s long.
    bounds = [0] + [f for a in actions for f in (a.first, a.last)] + [frames]
    gaps = [(start, end) for start, end in zip(bounds[::2], bounds[1::2]) if end - start >= FPS]
    distractors = []
    for g in sorted(rng.permutation(len(gaps))[:max(1, frames // (15 * FPS))]):
        start, end = gaps[g]
        length = int(rng.uniform(1, min(5, (end - start) / FPS)) * FPS)
        first = int(rng.integers(start, end - length + 1))
        kind = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        distractors.append(random_disc(rng, kind, first, first + length))
    return VideoPlan(video_name(subset, index), subset, frames, seed, tuple(actions), tuple(distractors))


def plan(seed=0, n_train=192, n_test=32, min_seconds=20, max_seconds=40):
    if not (n_train > 0 and n_test > 0):
        raise InputError(f"demo needs n_train, n_test > 0; got {n_train}, {n_test}")
    counts = {"training": n_train, "testing": n_test}
    return [plan_video(seed, subset, i, min_seconds, max_seconds)
            for subset, n in counts.items() for i in range(n)]


def plan_named(names, seed=0, min_seconds=20, max_seconds=40):
    """The plans of the named videos. A video depends only on its name, the seed and the length
    bounds: n_train and n_test say which videos exist, so growing them changes none made before."""
    subsets = {short: subset for subset, short in SUBSETS.items()}
    videos = []
    for name in names:
        match = re.fullmatch(r"demo_(train|test)_(\d+)", name)
        if not match or video_name(subsets[match[1]], int(match[2])) != name:
            raise InputError(f"no demo video named {name}: demo videos are named like demo_train_000, demo_test_000")
        videos.append(plan_video(seed, subsets[match[1]], int(match[2]), min_seconds, max_seconds))
    return videos


def ground_truth(videos):
    """Annotations of planned videos, in actloc's ActivityNet form (see annotations.py)."""
    database = {
        p.name: {
            "subset": p.subset, "duration": p.duration, "fps": float(FPS), "file": p.name,
            "annotations": [{"segment": [a.first / FPS, a.last / FPS], "label": a.kind} for a in p.actions],
            "ambiguous": [],
        }
        for p in videos
    }
    return {"classes": list(CLASSES), "database": database}


def rgb(color):
    """(r, g, b), 0-255, of a '#rrggbb' colour."""
    return tuple(int(color[k:k + 2], 16) for k in (1, 3, 5))


def progress(disc, frame):
    """0 at the disc's first frame, 1 at its last; `frame` counts from the disc's first frame."""
    return min(frame / max(disc.last - 1 - disc.first, 1), 1.0)


def on_first_half(disc, frame):
    """Whether the disc is in the first half of its cycle; `frame` counts from its first frame."""
    return (frame + disc.phase) % PERIOD < PERIOD // 2


def radius(disc, frame):
    """The disc's radius in its own `frame`."""
    low, high = RADIUS
    if disc.kind == "grow":
        return low + (high - low) * progress(disc, frame)
    if disc.kind == "blink":
        return disc.radius * on_first_half(disc, frame)
    return disc.radius


def spots(disc, frame):
    """(x, y) of the top-left corner of each copy of the disc in its own `frame`."""
    if disc.kind == "twins":
        return [(disc.x0, disc.y0), (disc.x1, disc.y1)]
    # A jump is at (x1, y1) in the second half of its cycle; anything else moves once along its path.
    where = (not on_first_half(disc, frame)) if disc.kind == "jump" else progress(disc, frame)
    return [(round(disc.x0 + (disc.x1 - disc.x0) * where), round(disc.y0 + (disc.y1 - disc.y0) * where))]


def frames(video):
    """The video's frames, (frames, HEIGHT, WIDTH, 3) uint8: the background, then distractors,
    then actions, each disc blended over what is below it by its opacity."""
    left, right = (np.array(rgb(c), np.float32) for c in BACKGROUND)
    background = left + (right - left) * np.linspace(0, 1, WIDTH, dtype=np.float32)[:, None]  # (WIDTH, 3)
    out = np.empty((video.frames, HEIGHT, WIDTH, 3), np.uint8)
    out[:] = np.round(background).astype(np.uint8)
    centre = (SPRITE - 1) / 2
    distance = np.hypot(*np.mgrid[:SPRITE, :SPRITE] - centre)[..., None]  # from the sprite's centre
    for disc in video.distractors + video.actions:
        color = np.array(rgb(disc.color), np.float32)
        opacity = 0.5 if disc.kind in ("glow", "twins") else 1.0
        for frame in range(disc.last - disc.first):
            alpha = opacity * (distance < radius(disc, frame))
            for x, y in spots(disc, frame):
                region = out[disc.first + frame, y:y + SPRITE, x:x + SPRITE]
                region[:] = np.round(region + alpha * (color - region))
    return out




def load(out_of_range="error", **settings):
    """The demo's ground truth, known from its plan (`settings`: those of `plan`); its segments
    are never out of range."""
    return ground_truth(plan(**settings))
