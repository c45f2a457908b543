"""The built-in demo dataset: synthetic untrimmed videos rendered by ffmpeg's lavfi sources.

Every action is a disc of a random colour from one palette, so colour says nothing about the
class; the five classes differ only in how the disc changes over time (blink, grow, shrink,
slide left, slide right). Distractor discs sit still (half transparent, so that their mean over
a snippet is a blinking disc's) or drift vertically, so a single frame cannot tell a growing
disc from a still one, nor where an action starts or ends.

The background is one static left-to-right colour gradient, the same in every video. It is
plain on purpose: the demo's backbone has random weights, and a random ViT's pooled
activations mostly follow the frame's mean colour. On a gradient, a disc changes that mean by
what it hides, so even where it is (a slide's direction) shows up in those activations.

The plan of a video (its length, actions and distractors) is a pure function of the seed,
subset and index, so the ground truth is exact and known without rendering anything.
"""

import math
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .decode import ffmpeg_exe
from .io import InputError, atomic_path, write_json

CLASSES = ("blink", "grow", "shrink", "slide_left", "slide_right")
DISTRACTORS = ("still", "drift")
SUBSETS = {"training": "train", "testing": "test"}
# Square frames: the backbone sees all of them (it centre-crops to a square).
WIDTH, HEIGHT, FPS = 64, 64, 20
SPRITE = 37  # side of the square each disc is drawn in
RADIUS = (7.0, 18.0)  # smallest and largest disc radius, pixels
BLINK_PERIOD = FPS // 2  # frames: on for half of it, off for the other half
# A still distractor is half transparent: averaged over a snippet it looks like a blinking disc,
# which only the order of frames within the snippet tells apart.
OPACITY = {"still": 0.5}
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


def video_names(n_train, n_test):
    return [video_name("training", i) for i in range(n_train)] + [
        video_name("testing", i) for i in range(n_test)
    ]


def random_disc(rng, kind, first, last):
    """A disc of the given kind with a random colour, size and path that stays in the frame."""
    room_x, room_y = WIDTH - SPRITE, HEIGHT - SPRITE
    x0, y0 = int(rng.integers(0, room_x + 1)), int(rng.integers(0, room_y + 1))
    x1, y1 = x0, y0
    seconds = (last - first) / FPS
    if kind in ("slide_left", "slide_right"):
        travel = int(np.clip(rng.uniform(7.5, 17.5) * seconds, 6, room_x))
        x0 = int(rng.integers(0, room_x - travel + 1))
        x1 = x0 + travel
        if kind == "slide_left":
            x0, x1 = x1, x0
    elif kind == "drift":
        travel = int(np.clip(rng.uniform(2.5, 7.5) * seconds, 4, room_y))
        y0 = int(rng.integers(0, room_y - travel + 1))
        y1 = y0 + travel * int(rng.choice([-1, 1]))
        if y1 < 0:
            y0, y1 = y0 + travel, y0
    radius = float(np.round(rng.uniform(*RADIUS), 1))
    color = PALETTE[int(rng.integers(len(PALETTE)))]
    return Disc(kind, first, last, x0, y0, x1, y1, radius, color)


def plan_video(seed, subset, index, min_seconds=20, max_seconds=40):
    """Lay out one video: non-overlapping actions of 1.5-8 s separated by 1-4 s gaps."""
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
    distractors = []
    for _ in range(max(1, frames // (15 * FPS))):
        length = min(int(rng.uniform(1, 5) * FPS), frames // 2)
        first = int(rng.integers(0, frames - length))
        kind = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        distractors.append(random_disc(rng, kind, first, first + length))
    return VideoPlan(video_name(subset, index), subset, frames, seed, tuple(actions), tuple(distractors))


def plan(seed=0, n_train=96, n_test=16, min_seconds=20, max_seconds=40):
    # 6 s leaves room for the longest first gap (4 s) and a shortest action.
    if not (n_train > 0 and n_test > 0 and 6 <= min_seconds <= max_seconds):
        raise InputError(f"demo needs n_train, n_test > 0 and 6 <= min_seconds <= max_seconds; "
                         f"got {n_train}, {n_test}, {min_seconds}, {max_seconds}")
    counts = {"training": n_train, "testing": n_test}
    return [plan_video(seed, subset, i, min_seconds, max_seconds)
            for subset, n in counts.items() for i in range(n)]


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


def _progress(disc, frame):
    """0 at the disc's first frame, 1 at its last; `frame` counts from the disc's first frame."""
    return f"clip({frame}/{max(disc.last - 1 - disc.first, 1)},0,1)"


def _radius_expr(disc):
    low, high = RADIUS
    if disc.kind == "grow":
        return f"{low}+{high - low}*{_progress(disc, 'N')}"
    if disc.kind == "shrink":
        return f"{high}-{high - low}*{_progress(disc, 'N')}"
    if disc.kind == "blink":
        return f"{disc.radius}*lt(mod(N,{BLINK_PERIOD}),{BLINK_PERIOD // 2})"
    return str(disc.radius)


def filter_graph(video):
    """The lavfi graph that draws `video`: background, then distractors, then actions."""
    left, right = BACKGROUND
    chains = [f"gradients=s={WIDTH}x{HEIGHT}:r={FPS}:c0={left}:c1={right}:nb_colors=2:x0=0:y0={HEIGHT // 2}"
              f":x1={WIDTH - 1}:y1={HEIGHT // 2}:speed=0.00001,format=rgb24[bg0]"]
    centre = (SPRITE - 1) / 2
    discs = video.distractors + video.actions
    for i, d in enumerate(discs):
        r, g, b = (int(d.color[k:k + 2], 16) for k in (1, 3, 5))
        alpha = f"{round(255 * OPACITY.get(d.kind, 1))}*lt(hypot(X-{centre},Y-{centre}),{_radius_expr(d)})"
        # Drawn only during its own frames (one spare), shifted to its start: geq is the cost.
        chains.append(f"color=c=black:s={SPRITE}x{SPRITE}:r={FPS}:d={(d.last - d.first + 1) / FPS},"
                      f"format=rgba,geq=r={r}:g={g}:b={b}:a='{alpha}',setpts=PTS+{d.first}/({FPS}*TB)[disc{i}]")
        progress = _progress(d, f"(n-{d.first})")
        chains.append(f"[bg{i}][disc{i}]overlay=x='{d.x0}+{d.x1 - d.x0}*{progress}':y='{d.y0}+{d.y1 - d.y0}*{progress}'"
                      f":eof_action=pass:enable='between(n,{d.first},{d.last - 1})'[bg{i + 1}]")
    chains.append(f"[bg{len(discs)}]format=yuv420p[out]")
    return ";".join(chains)


def render(video, out):
    """Encode one planned video to `out` (H.264 mp4, byte-identical across reruns)."""
    with atomic_path(out) as tmp:
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-filter_complex", filter_graph(video),
               "-map", "[out]", "-frames:v", str(video.frames), "-c:v", "libx264", "-preset", "veryfast",
               "-crf", "20", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"ffmpeg failed rendering {out}: {done.stderr.strip()[-2000:]}")


def generate(out_dir, seed=0, n_train=96, n_test=16, min_seconds=20, max_seconds=40, only=None, jobs=2):
    """Render the demo videos into `out_dir` (only the named ones if `only` is given).

    Writes `annotations.json` beside them when rendering the whole set.
    """
    videos = plan(seed, n_train, n_test, min_seconds, max_seconds)
    if only:
        known = {v.name: v for v in videos}
        missing = sorted(set(only) - set(known))
        if missing:
            raise InputError(f"no demo video named {', '.join(missing)}: this demo has {videos[0].name} "
                             f"... {videos[-1].name} (n_train={n_train}, n_test={n_test})")
        videos = [known[name] for name in only]
    out_dir = Path(out_dir)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        jobs_done = pool.map(lambda v: render(v, out_dir / f"{v.name}.mp4"), videos)
        list(tqdm(jobs_done, total=len(videos), desc="demo videos", unit="video", disable=len(videos) < 2))
    if not only:
        write_json(out_dir / "annotations.json", ground_truth(videos))
    return [out_dir / f"{v.name}.mp4" for v in videos]
