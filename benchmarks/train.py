"""One training step of LoSA from the cache, against the frozen backbone run online and against
full fine-tuning, for one video of T snippets (ViT-S width 384, 4 tapped layers, CPU, 2 threads).
The head is the published THUMOS-14 one (512 wide, 6 levels) or the demo's (128 wide, 4
levels); the long-range adapter attends over the whole video, or over +-256 snippets.

  cache:  read the video's 4 layers (pooled + temporal) from its Zarr store, LoSA + head
          forward, backward, AdamW step. Measured at every T.
  online: the same step, but the frozen backbone first computes the activations from the
          clips (no_grad, batches of 8). Backbone cost is measured on 16 snippets and scaled
          by T (it is linear: one independent forward per snippet); decoding is not counted.
  full:   backbone and head trained together (gradients through every block). Measured at 4
          and 12 snippets; time and memory per snippet are extrapolated to T.

Online and full are measured at 112 px (the cheapest clips) and at 224 px (the resolution
VideoMAE checkpoints are trained at, and that the THUMOS and ActivityNet configs cache at).
Memory is the rise of the process's peak resident size over its size before the step, in a
fresh process per case (CPU has no allocator statistics).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402
from actloc.backbones import videomae  # noqa: E402
from actloc.engine import loop  # noqa: E402
from actloc.methods import detector  # noqa: E402
from actloc.settings import HeadConfig, LosaConfig  # noqa: E402
from actloc.store import windows  # noqa: E402
from actloc.store.stores import open_cache, write_store  # noqa: E402


SNIPPETS = (1024, 8192)
LAYERS, CLASSES, LONG_WINDOW = (3, 6, 9, 12), 20, 256
HEADS = {"published": HeadConfig(),
         "demo": HeadConfig(width=128, levels=4, window=9, regression_ranges=((0, 4), (4, 8), (8, 16), (16, 1e4)))}
CACHE_CASES = (("published", None), ("demo", None), ("published", LONG_WINDOW))
PIXELS = (112, 224)


def rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def losa_step(net, optimizer, batch):
    outputs = net(batch)
    targets = [(torch.tensor([[10.0, 30.0], [100.0, 140.0]]), torch.tensor([1, 4]))]
    loss = net.head.loss(outputs, targets)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def case_cache(snippets, folder, head, long_window):
    rng = np.random.default_rng(0)
    path = Path(folder) / "video.zarr"
    write_store(path, "benchmark", list(LAYERS), rng.normal(size=(4, snippets, 384)).astype(np.float32),
                rng.normal(size=(4, snippets, 8, 384)).astype(np.float32), backbone="small", preset="small",
                identity="random:0", snippet_frames=16, stride=4, fps=30.0, pixels=112, precision="fp32")
    store = open_cache(path)
    video = windows.CachedVideo("video", store, snippets * 0.4, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    net = detector.Detector("losa", 384, 4, CLASSES, HEADS[head], LosaConfig(long_window=long_window))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    before = rss_mb()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        batch = windows.collate([video], [(0, snippets)], net.reads, net.head.max_stride)
        losa_step(net, optimizer, batch)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    store.read(layers=None, temporal=True)
    return {"seconds": min(times), "memory_mb": peak_mb() - before, "read_seconds": time.perf_counter() - start,
            "trainable": loop.trainable_parameters(net)}


def vit_small():
    return videomae.random_backbone("small", seed=0)


def case_online(pixels):
    net = vit_small().eval()
    clips = torch.randint(0, 256, (8, 16, pixels, pixels, 3), dtype=torch.uint8)
    before = rss_mb()
    with torch.no_grad():
        net(clips, list(LAYERS))  # warm-up
        start = time.perf_counter()
        for _ in range(2):
            tokens = net(clips, list(LAYERS))
            [net.pool(t, layer, temporal=True) for t, layer in zip(tokens, LAYERS)]
    per_snippet = (time.perf_counter() - start) / 16
    return {"seconds_per_snippet": per_snippet, "memory_mb": peak_mb() - before}


def case_full(snippets, pixels):
    net = vit_small().train().requires_grad_(True)
    head = detector.Detector("head_only", 384, 1, CLASSES, HeadConfig())
    optimizer = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=1e-5)
    clips = torch.randint(0, 256, (snippets, 16, pixels, pixels, 3), dtype=torch.uint8)
    before = rss_mb()
    start = time.perf_counter()
    tokens = net(clips, [12])[0]
    pooled = net.pool(tokens, 12, temporal=False)  # (n, C)
    pooled = torch.nn.functional.pad(pooled.T, (0, 32 - snippets)).T  # the head needs 32 steps
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[0, :snippets] = True
    outputs = head({"pooled": pooled[None, None], "temporal": None, "mask": mask})
    loss = head.head.loss(outputs, [(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))])["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"seconds": time.perf_counter() - start, "memory_mb": peak_mb() - before}


def run_case(*args):
    out = subprocess.run([sys.executable, __file__, "--case", *map(str, args)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cache_label(head, long_window):
    return f"{head} head, long range {'whole video' if long_window is None else f'+-{long_window}'}"


def main():
    online = {pixels: run_case("online", pixels) for pixels in PIXELS}
    full = {}
    for pixels in PIXELS:
        small, larger = run_case("full", 4, pixels), run_case("full", 12, pixels)
        full[pixels] = {key: (larger[key] - small[key]) / 8 for key in ("seconds", "memory_mb")}
    cached = {(snippets, case): run_case("cache", snippets, *case) for snippets in SNIPPETS for case in CACHE_CASES}
    rows = []
    for snippets in SNIPPETS:
        for case in CACHE_CASES:
            step = cached[snippets, case]
            # Online = the backbone over every snippet, then the same step on its activations.
            online_seconds = {pixels: online[pixels]["seconds_per_snippet"] * snippets + step["seconds"]
                              - step["read_seconds"] for pixels in PIXELS}
            rows.append({"T": snippets, "LoSA step from the cache": cache_label(*case),
                         "seconds": f"{step['seconds']:.2f}", "peak MB": f"{step['memory_mb']:.0f}",
                         **{f"online {p} px: s (x)": f"{online_seconds[p]:.0f} ({online_seconds[p] / step['seconds']:.0f}x)"
                            for p in PIXELS},
                         **{f"full FT {p} px: s, MB (x)": f"{full[p]['seconds'] * snippets:.0f}, "
                            f"{full[p]['memory_mb'] * snippets:.0f} ({full[p]['memory_mb'] * snippets / step['memory_mb']:.0f}x)"
                            for p in PIXELS}})
    growth = [f"{cache_label(*case)}: time x{cached[SNIPPETS[1], case]['seconds'] / cached[SNIPPETS[0], case]['seconds']:.1f}, "
              f"memory x{cached[SNIPPETS[1], case]['memory_mb'] / cached[SNIPPETS[0], case]['memory_mb']:.1f}"
              for case in CACHE_CASES]
    print(f"Trainable parameters: {cached[SNIPPETS[0], CACHE_CASES[0]]['trainable']:,} (published head), "
          f"{cached[SNIPPETS[0], CACHE_CASES[1]]['trainable']:,} (demo head). Backbone online per snippet: "
          + ", ".join(f"{online[p]['seconds_per_snippet'] * 1000:.0f} ms at {p} px" for p in PIXELS)
          + ". Full fine-tuning per snippet: "
          + ", ".join(f"{full[p]['seconds']:.2f} s and {full[p]['memory_mb']:.0f} MB at {p} px" for p in PIXELS)
          + f". From T={SNIPPETS[0]} to {SNIPPETS[1]}: " + "; ".join(growth) + ".")
    report("train", "One training step on one video of T snippets (ViT-S width, 4 tapped layers, CPU, 2 threads; "
           "x = online time or full fine-tuning memory over the cache step's)", rows)


if __name__ == "__main__":
    torch.set_num_threads(2)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", metavar="ARG",
                        help="one measurement in this process: cache T HEAD WINDOW | online PIXELS | full T PIXELS")
    args = parser.parse_args()
    if args.case is None:
        main()
    else:
        name, *values = args.case
        values = [None if v == "None" else v if v in HEADS else int(v) for v in values]
        if name == "cache":
            with tempfile.TemporaryDirectory() as tmp:
                result = case_cache(values[0], tmp, *values[1:])
        else:
            result = {"online": case_online, "full": case_full}[name](*values)
        print(json.dumps(result))
