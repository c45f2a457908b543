"""Demo-data stage: render the built-in demo dataset's videos (actloc.datasets.demo plans and
draws them), keeping those already rendered from the same plan."""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path


from ..datasets.demo import FPS, HEIGHT, WIDTH, frames, ground_truth, plan, plan_named
from ..io import InputError, atomic_path, read_json, write_json
from ..progress import progress
from ..media import ffmpeg_exe


def plan_path(out):
    """The plan a rendered video was drawn from, written beside it once it is complete."""
    return Path(out).with_suffix(".json")


def rendered(video, out):
    """Whether `out` is already `video` rendered: its plan, written after it, is this one."""
    try:
        return Path(out).is_file() and read_json(plan_path(out)) == json.loads(json.dumps(asdict(video)))
    except InputError:
        return False


def render(video, out):
    """Encode one planned video to `out` (H.264 mp4, byte-identical across reruns) and its plan
    beside it."""
    with atomic_path(out) as tmp:
        # One encoder thread: x264's output depends on its thread count, and must not on the machine.
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-", "-pix_fmt", "yuv420p", "-c:v", "libx264",
               "-preset", "veryfast", "-crf", "20", "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
               "-map_metadata", "-1", str(tmp)]
        done = subprocess.run(cmd, input=frames(video).tobytes(), capture_output=True)
        if done.returncode:
            raise RuntimeError(f"ffmpeg failed rendering {out}: {done.stderr.decode(errors='replace').strip()[-2000:]}")
    write_json(plan_path(out), asdict(video))


def generate(out_dir, seed=0, n_train=192, n_test=32, min_seconds=20, max_seconds=40, only=None, jobs=2):
    """Render the demo videos into `out_dir`: all n_train + n_test of them, with `annotations.json`
    beside them, or only the named ones (n_train and n_test then play no part). Videos already
    rendered from the same plan are kept. Returns (every video's path, the files written)."""
    if only:
        videos = plan_named(only, seed, min_seconds, max_seconds)
    else:
        videos = plan(seed, n_train, n_test, min_seconds, max_seconds)
    out_dir = Path(out_dir)
    todo = [v for v in videos if not rendered(v, out_dir / f"{v.name}.mp4")]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        jobs_done = pool.map(lambda v: render(v, out_dir / f"{v.name}.mp4"), todo)
        list(progress(jobs_done, total=len(todo), desc="demo videos", unit="video", disable=len(todo) < 2))
    written = [path for v in todo for path in (out_dir / f"{v.name}.mp4", plan_path(out_dir / f"{v.name}.mp4"))]
    if not only:
        write_json(out_dir / "annotations.json", ground_truth(videos))
        written.append(out_dir / "annotations.json")
    return [out_dir / f"{v.name}.mp4" for v in videos], written
