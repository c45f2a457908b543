import os
import subprocess
import sys
from pathlib import Path

import pytest

from actloc import demo_data
from actloc.decode import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
THUMOS = ROOT / "resources" / "thumos14"
# Small enough to render in seconds, long enough for several actions each.
TINY_DEMO = dict(seed=3, n_train=2, n_test=1, min_seconds=8, max_seconds=10)


def run_ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


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
    return folder, {p.name: p for p in demo_data.plan(**TINY_DEMO)}


@pytest.fixture(scope="session")
def source_video(tmp_path_factory):
    """A 3 s, 25 fps, 320x180 test pattern with audio, starting at a non-zero timestamp."""
    path = tmp_path_factory.mktemp("src") / "pattern.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=3", "-f", "lavfi", "-i", "sine=d=3",
               "-output_ts_offset", "0.5", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
               "-shortest", path)
    return path
