"""Time of `actloc detect` per video, split into decode, cache (the backbone) and head (the
method and its NMS), on freshly rendered demo videos with a trained demo model:

    python benchmarks/detect.py --model results/demo/losa/model.pt
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from actloc.methods import detector
from actloc.stages import demo_data
from actloc.stages.cache import build_all
from actloc.stages.decode import normalize_all
from actloc.stages.detect import decode_settings, find_backbone
from actloc.stages.infer import detect
from actloc.store.stores import open_cache
from actloc.store.windows import CachedVideo
from common import report


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a trained demo model.pt")
    parser.add_argument("--videos", type=int, default=3, help="demo test videos rendered (seed 5) and timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    net, saved = detector.load(args.model)
    fps, short_side = decode_settings(args.model, saved)
    settings = find_backbone(args.model, saved)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths, _ = demo_data.generate(folder / "source", seed=5, n_train=1, n_test=args.videos)
        for source in sorted(p for p in paths if "test" in p.stem):
            started = time.perf_counter()
            info = normalize_all([source.stem], [source], folder / "videos", fps, short_side, threads=1)[0][source.stem]
            decoded = time.perf_counter()
            store = folder / "stores" / f"{source.stem}.zarr"
            build_all([folder / "videos" / f"{source.stem}.mp4"], [store], settings, saved["store"]["snippet_frames"],
                      saved["store"]["stride"], 8, "cpu", threads=1)
            cached = time.perf_counter()
            video = CachedVideo(source.stem, open_cache(store), info["frames"] / info["fps"], torch.zeros(0, 2),
                                torch.zeros(0, dtype=torch.long))
            found = detect(net, video, saved["classes"], torch.device("cpu"))
            done = time.perf_counter()
            rows.append({"video": source.stem, "seconds of video": f"{video.duration:.1f}",
                         "decode s": f"{decoded - started:.2f}", "cache s": f"{cached - decoded:.2f}",
                         "head s": f"{done - cached:.3f}", "total s": f"{done - started:.2f}",
                         "detections": len(found)})
    report("detect", f"actloc detect per video ({saved['settings']['method']}, one thread, CPU)", rows)


if __name__ == "__main__":
    main()
