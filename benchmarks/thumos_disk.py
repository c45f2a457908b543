"""Cache bytes of THUMOS-14 with VideoMAEv2 ViT-g (4 layers x 1,408, temporal tokens): bytes a
snippet as the project's writer stores activations of that shape, times the benchmark's
snippets (the shipped metadata's durations at 30 fps, 16 frames every 4). docs/thumos14.md."""

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from actloc.store.snippets import snippet_count
from actloc.store.stores import write_store
from common import report

ROOT = Path(__file__).resolve().parents[1]
METADATA = {"validation": "thumos14_valid_metadata.csv", "testing": "thumos14_test_metadata.csv"}
LAYERS, WIDTH, STEPS = 4, 1408, 8  # ViT-g's taps; 16 frames / tubelet 2


def stored_bytes_per_snippet(snippets):
    """Stored bytes a snippet of ViT-g-shaped activations (unit-variance tokens, the temporal
    ones around their snippet's mean, as real taps are), written by the cache's own writer."""
    rng = np.random.default_rng(0)
    pooled = rng.normal(0, 1, (LAYERS, snippets, WIDTH)).astype(np.float32)
    temporal = (pooled[:, :, None] + rng.normal(0, 0.5, (LAYERS, snippets, STEPS, WIDTH))).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.zarr"
        write_store(path, "v", [10, 20, 30, 40], pooled, temporal, backbone="vitg", preset="giant",
                    identity="synthetic", snippet_frames=16, stride=4, fps=30.0, pixels=224, precision="bf16",
                    video="v")
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / snippets


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--snippets", type=int, default=1000, help="snippets of the measured store")
    args = parser.parse_args()
    per_snippet = stored_bytes_per_snippet(args.snippets)
    rows = []
    for subset, name in METADATA.items():
        with open(ROOT / "resources" / "thumos14" / "metadata" / name, newline="") as f:
            durations = [float(row["video-duration"]) for row in csv.DictReader(f)]
        snippets = sum(snippet_count(round(d * 30), 16, 4) for d in durations)
        rows.append({"subset": subset, "videos": len(durations), "seconds": f"{sum(durations):,.0f}",
                     "snippets": f"{snippets:,}", "bytes a snippet": f"{per_snippet:,.0f}",
                     "cache GB": f"{snippets * per_snippet / 1e9:.1f}",
                     "largest video MB": f"{snippet_count(round(max(durations) * 30), 16, 4) * per_snippet / 1e6:.0f}"})
    raw = LAYERS * WIDTH * (1 + STEPS) * 2
    report("thumos_disk", f"THUMOS-14 cache with ViT-g (raw float16: {raw:,} B a snippet)", rows)


if __name__ == "__main__":
    main()
