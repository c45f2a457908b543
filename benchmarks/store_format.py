"""Store formats compared: codecs and chunk lengths for the cache's activations, written by the
project's own writer (StoreWriter, its codecs and chunk length swapped) and read back by
Cache.read, on the demo cache's real activations and on synthetic ViT-g-shaped ones.

- stored: bytes on disk over raw float16 bytes (every alternative with a CRC-32C a chunk, but
  one: the checksum's cost);
- write MB/s: raw bytes a second through the writer (checks, moments and all);
- read MB/s warm: stored bytes a second of whole-store reads (every layer, pooled and temporal),
  best of 3 after one, the page cache warm; cold: after dropping it (root only; else "n/a").

The demo activations are those of `make demo`'s cache (`--demo`, default its folder), every
store's pooled and temporal taps end to end as one video; the ViT-g ones a THUMOS-length video
(1,900 snippets, 4 layers x 1,408 channels, 8 temporal tokens) of unit-variance tokens around
their snippet's mean. One torch and one codec thread.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402
from data_path import drop_page_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def alternatives():
    from zarr.codecs import BloscCodec, Crc32cCodec

    def blosc(cname, level, shuffle):
        return BloscCodec(cname=cname, clevel=level, shuffle=shuffle, blocksize=0)

    codecs = {"none": (), "lz4": (blosc("lz4", 1, "noshuffle"),), "lz4, shuffle": (blosc("lz4", 5, "shuffle"),),
              "zstd 1, shuffle": (blosc("zstd", 1, "shuffle"),), "zstd 5, shuffle (format 2)": (blosc("zstd", 5, "shuffle"),)}
    checked = [(name, chunk, (*codec, Crc32cCodec())) for name, codec in codecs.items() for chunk in (256, 1024)]
    return checked + [("none, no checksum (the checksum's cost)", 1024, ())]


def demo_activations(folder):
    import zarr

    stores = sorted(Path(folder).glob("*.zarr"))
    if not stores:
        raise SystemExit(f"store_format: no stores in {folder}; run `make demo` first (or pass --demo)")
    groups = [zarr.open_group(path, mode="r") for path in stores]
    pooled = np.concatenate([group["pooled"][:] for group in groups], 1)
    temporal = np.concatenate([group["temporal"][:] for group in groups], 1)
    return pooled, temporal


def vitg_activations(snippets=1900, layers=4, width=1408, steps=8):
    rng = np.random.default_rng(0)
    pooled = rng.normal(0, 1, (layers, snippets, width)).astype(np.float16)
    temporal = (pooled[:, :, None] + rng.normal(0, 0.5, (layers, snippets, steps, width))).astype(np.float16)
    return pooled, temporal


def measure(pooled, temporal, codecs, chunk, folder):
    import zarr

    from actloc.store import stores

    stores.CODECS, stores.CHUNK = codecs, chunk
    path = Path(folder) / f"{len(os.listdir(folder))}.zarr"
    shapes = stores.array_shapes(len(pooled), pooled.shape[-1], temporal.shape[2])
    start = time.perf_counter()
    writer = stores.StoreWriter(zarr.open_group(path, mode="w"), "benchmark", list(range(1, len(pooled) + 1)), shapes,
                                pooled.shape[1])
    writer.append({"pooled": pooled, "temporal": temporal})
    writer.finish(backbone="b", preset="p", identity="i", snippet_frames=16, stride=4, fps=30.0, pixels=224,
                  precision="fp32")
    write = time.perf_counter() - start
    stored = sum(p.stat().st_size for p in path.rglob("c/**/*") if p.is_file())
    raw = pooled.nbytes + temporal.nbytes
    cache = stores.open_cache(path)

    def read():
        began = time.perf_counter()
        cache.read(temporal=True)
        return time.perf_counter() - began

    read()
    warm = min(read() for _ in range(3))
    cold = read() if drop_page_cache() else None
    return {"stored": f"{stored / raw:.1%}", "write MB/s": f"{raw / write / 1e6:,.0f}",
            "read MB/s warm": f"{stored / warm / 1e6:,.0f}",
            "read MB/s cold": f"{stored / cold / 1e6:,.0f}" if cold else "n/a (not root)"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=ROOT / "results/demo/cache/tiny-random",
                        help="a folder of demo stores (make demo's cache)")
    args = parser.parse_args()
    import numcodecs.blosc
    import torch
    import zarr

    torch.set_num_threads(1)
    numcodecs.blosc.set_nthreads(1)
    zarr.config.set({"threading.max_workers": 1})
    inputs = {"demo (tiny, real)": demo_activations(args.demo), "ViT-g (synthetic)": vitg_activations()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for data, (pooled, temporal) in inputs.items():
            for name, chunk, codecs in alternatives():
                row = {"activations": f"{data}, {pooled.shape[1]:,} snippets", "codec": name, "chunk": chunk}
                rows.append(row | measure(pooled, temporal, codecs, chunk, folder))
                print(rows[-1], file=sys.stderr)
    report("store_format", "Store formats: codecs and chunk lengths (one thread)", rows)


if __name__ == "__main__":
    main()
