import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from actloc.datasets import demo
from actloc.stages import demo_data
from actloc.media import ffmpeg_exe
from actloc.store import stores


ROOT = Path(__file__).resolve().parents[1]
THUMOS = ROOT / "resources" / "thumos14"
# Small enough to render in seconds, long enough for several actions each.
TINY_DEMO = dict(seed=3, n_train=2, n_test=1, min_seconds=8, max_seconds=10)


def run_ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def free_port():
    """A TCP port free on localhost, for a data-parallel training's processes to meet at."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def env_with_actloc():
    """Environment in which the `actloc` command of this interpreter is on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory):
    """The tiny demo set, rendered once: (folder, plans by name)."""
    folder = tmp_path_factory.mktemp("demo")
    demo_data.generate(folder, **TINY_DEMO)
    return folder, {p.name: p for p in demo.plan(**TINY_DEMO)}


@pytest.fixture(scope="session")
def source_video(tmp_path_factory):
    """A 3 s, 25 fps, 320x180 test pattern with audio, starting at a non-zero timestamp."""
    path = tmp_path_factory.mktemp("src") / "pattern.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=3", "-f", "lavfi", "-i", "sine=d=3",
               "-output_ts_offset", "0.5", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
               "-shortest", path)
    return path



@pytest.fixture(scope="session")
def normalized(source_video, tmp_path_factory):
    """The source video decoded at 10 fps, short side 90: (its path, its JSON)."""
    from actloc.stages import decode

    out = tmp_path_factory.mktemp("decoded") / "pattern.mp4"
    return out, decode.normalize(source_video, out, fps=10, short_side=90)


def write_store(path, pooled, temporal=None, **attrs):
    """A cache store of the given (layers, T, C) [and (layers, T, t, C)] activations."""

    attrs = {"backbone": "synthetic", "family": "videomae", "tubelet": 2, "preset": "none", "identity": "synthetic",
             "snippet_frames": 16, "stride": 4, "fps": 10.0, "pixels": None, "precision": "fp32", **attrs}
    return stores.write_store(path, str(path), list(range(1, len(pooled) + 1)), pooled, temporal, **attrs)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """Six videos of three classes whose cached activations plainly show each action (a class
    channel on during it, marks at its first and last snippet) in a weaker layer under noise:
    a head that learns must reach mAP ~1 on them. Returns (index.json, annotations.json)."""
    import numpy as np

    from actloc.io import write_json

    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    classes, database, stores = ["a", "b", "c"], {}, {}
    for i in range(6):
        length = int(rng.integers(60, 90))
        pooled = rng.normal(0, 0.3, (2, length, 8)).astype(np.float32)
        actions, step = [], int(rng.integers(2, 6))
        while step < length - 14:
            span = int(rng.integers(3, 12))
            label = int(rng.integers(3))
            pooled[:, step:step + span, label] += np.array([[0.5], [2.0]])  # the last layer shows it best
            pooled[:, step, 3] += 2.0
            pooled[:, step + span - 1, 4] += 2.0
            # Snippet s is centred at (4 s + 8) / 10 s: segment ends are centres of first / last.
            actions.append({"segment": [(4 * step + 8) / 10, (4 * (step + span - 1) + 8) / 10],
                            "label": classes[label]})
            step += span + int(rng.integers(2, 6))
        temporal = np.repeat(pooled[:, :, None], 4, 2) + rng.normal(0, 0.1, (2, length, 4, 8)).astype(np.float32)
        name = f"video_{i}"
        write_store(folder / f"{name}.zarr", pooled, temporal, video=name)
        database[name] = {"subset": "training", "duration": (4 * length + 8) / 10, "fps": 10.0,
                          "annotations": actions, "ambiguous": []}
        stores[name] = {"path": str(folder / f"{name}.zarr"), "snippets": length}
    write_json(folder / "annotations.json", {"classes": classes, "database": database})
    write_json(folder / "index.json", {"stores": stores, "missing": []})
    return folder / "index.json", folder / "annotations.json"


def activitynet_form_dataset(folder, videos, classes=200):
    """A generated ActivityNet-1.3-form dataset of `videos` videos (half training, a quarter each
    validation and testing, the testing ones unannotated, as published) and an empty placeholder
    file for each training and validation video: enough to plan the workflow, not to run it.
    Returns (the JSON, the videos folder)."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    labels = [f"class {k:03d}" for k in range(classes)]
    subsets = ["training"] * (videos // 2) + ["validation"] * (videos // 4)
    subsets += ["testing"] * (videos - len(subsets))
    database, sources = {}, Path(folder) / "videos"
    sources.mkdir(parents=True, exist_ok=True)
    for i, subset in enumerate(subsets):
        name = f"{i:06d}{rng.integers(1 << 30):x}"[:11]
        duration = float(np.round(rng.uniform(20, 220), 2))
        actions = []
        if subset != "testing":
            for _ in range(rng.integers(1, 3)):
                start = float(np.round(rng.uniform(0, duration - 10), 2))
                actions.append({"segment": [start, float(np.round(start + rng.uniform(2, 10), 2))],
                                "label": labels[rng.integers(classes)]})
            (sources / f"v_{name}.mp4").touch()
        database[name] = {"subset": subset, "duration": duration, "annotations": actions}
    path = Path(folder) / "activity_net.json"
    path.write_text(json.dumps({"version": "generated", "database": database}))
    return path, sources


def graph_leaves(tensor):
    """Every tensor the autograd graph of `tensor` accumulates a gradient into."""
    leaves, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves
