"""Cache stage throughput against a bare backbone forward, and the cache's size on disk.

Makes a noisy test-pattern video, normalizes it as the demo is (10 fps, short side 112), then,
for each backbone setting, times (best of 2):
  bare forward: the backbone alone on random uint8 clips already in memory, same batch and
                pixel size, as many clips as the video has snippets (no decoding, no writing);
  cache stage:  actloc.cache.build on the video (model set-up, decoding, snippet assembly,
                forward, pooling of 4 tapped layers, float16 Zarr writes, rename).
Size: bytes on disk of `pooled` and `temporal` per snippet per tapped layer.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, report  # noqa: E402
from actloc.backbones import videomae  # noqa: E402
from actloc.stages import backbone  # noqa: E402
from actloc.stages import cache  # noqa: E402
from actloc.media import ffmpeg_exe  # noqa: E402
from actloc.stages.decode import normalize  # noqa: E402


# (preset, pixels, precision, batch, seconds of video)
SETTINGS = [("tiny", 112, "fp32", 8, 120), ("small", 112, "fp32", 8, 30), ("small", 112, "bf16", 8, 30)]


def disk_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for preset, pixels, precision, batch, seconds in SETTINGS:
            source, video = tmp / f"source{seconds}.mp4", tmp / f"video{seconds}.mp4"
            if not video.exists():
                subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                                "testsrc2=s=160x120:r=20,noise=alls=20:allf=t", "-t", str(seconds),
                                "-c:v", "libx264", "-preset", "veryfast", str(source)], check=True)
                normalize(source, video, fps=10, short_side=112)
            settings = backbone.describe(preset, preset, pixels=pixels, precision=precision)
            layers = settings["layers"]
            store = tmp / f"{preset}-{precision}.zarr"
            attrs = {}
            build = best_time(lambda: attrs.update(cache.build(video, store, settings, batch=batch)), repeats=2)
            snippets = attrs["snippets"]

            model, _ = videomae.load(preset)
            clips = torch.randint(0, 256, (batch, 16, pixels, pixels, 3), dtype=torch.uint8)
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

            def forward():
                with torch.inference_mode(), autocast:
                    for _ in range(-(-snippets // batch)):
                        model(clips, layers)

            bare = best_time(forward, repeats=2)
            pooled = disk_bytes(store / "pooled") / (snippets * len(layers))
            temporal = disk_bytes(store / "temporal") / (snippets * len(layers))
            width = model.preset.width
            rows.append({
                "backbone": f"{preset} {pixels}px {precision}, batch {batch}, layers {layers}",
                "snippets": snippets,
                "bare forward (clips/s)": f"{snippets / bare:.1f}",
                "cache stage (clips/s)": f"{snippets / build:.1f}",
                "ratio": f"{bare / build:.0%}",
                "pooled (B/snippet/layer)": f"{pooled:.0f} (raw {2 * width})",
                "temporal (B/snippet/layer)": f"{temporal:.0f} (raw {16 * width})",
            })
    report("cache", "Cache stage vs bare backbone forward (CPU, 2 threads)", rows)


if __name__ == "__main__":
    main()
