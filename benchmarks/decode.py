"""Frame reader throughput against ffmpeg's decode-only ceiling on the same normalized video.

Makes a 60 s, 640x360, 30 fps noisy test pattern, normalizes it with `actloc decode` at two
settings (the THUMOS one and the demo one), then times, best of 3:
  ceiling: `ffmpeg -i normalized.mp4 -f null -` (decode only, no pixel conversion)
  reader:  actloc.media.iter_frames over the same file (decode, RGB conversion, to numpy)
"""

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, report  # noqa: E402
from actloc.media import ffmpeg_exe, iter_frames  # noqa: E402
from actloc.stages.decode import normalize  # noqa: E402


SETTINGS = [(30, 224), (10, 112)]


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source.mp4"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=30,noise=alls=20:allf=t",
                        "-t", "60", "-c:v", "libx264", "-preset", "veryfast", str(source)], check=True)
        for fps, short_side in SETTINGS:
            video = Path(tmp) / f"n{fps}_{short_side}.mp4"
            info = normalize(source, video, fps, short_side)
            ceiling = best_time(lambda: subprocess.run(
                [ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "null", "-"], check=True))
            frames = []
            reader = best_time(lambda: frames.append(sum(1 for _ in iter_frames(video))))
            assert frames[0] == info["frames"]
            rows.append({
                "normalized video": f"{info['width']}x{info['height']} @ {fps} fps, {info['frames']} frames",
                "ffmpeg -f null (frames/s)": f"{info['frames'] / ceiling:.0f}",
                "iter_frames (frames/s)": f"{info['frames'] / reader:.0f}",
                "ratio": f"{ceiling / reader:.0%}",
            })
    report("decode", "Frame reader vs ffmpeg decode-only ceiling", rows)


if __name__ == "__main__":
    main()
