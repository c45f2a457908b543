"""One training step of LoSA from the cache, against the frozen backbone run online and against
full fine-tuning, for one video of T snippets (ViT-S width 384, 4 tapped layers, 112 px clips).
The head is the published THUMOS-14 one (512 wide, 6 levels) or the demo's (128 wide, 4
levels). CPU, 2 threads.

  cache:  read the video's 4 layers (pooled + temporal) from its Zarr store, LoSA + head
          forward, backward, AdamW step. Measured at every T.
  online: the same step, but the frozen backbone first computes the activations from the
          clips (no_grad, batches of 8). Backbone cost is measured on 16 snippets and scaled
          by T (it is linear: one independent forward per snippet); decoding is not counted.
  full:   backbone and head trained together (gradients through every block). Measured at 4
          and 12 snippets; time and memory per snippet are extrapolated to T.

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

from actloc import backbone, data, model  # noqa: E402
from actloc.cache import open_cache, write_store  # noqa: E402
from actloc.head import HeadConfig  # noqa: E402

SNIPPETS = (1024, 8192)
LAYERS, PIXELS, CLASSES = (3, 6, 9, 12), 112, 20
HEADS = {"published": HeadConfig(),
         "demo": HeadConfig(width=128, levels=4, window=9, regression_ranges=((0, 4), (4, 8), (8, 16), (16, 1e4)))}


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


def case_cache(snippets, folder, head="published"):
    rng = np.random.default_rng(0)
    path = Path(folder) / "video.zarr"
    write_store(path, "benchmark", list(LAYERS), rng.normal(size=(4, snippets, 384)).astype(np.float32),
                rng.normal(size=(4, snippets, 8, 384)).astype(np.float32), backbone="small", preset="small",
                identity="random:0", snippet_frames=16, stride=4, fps=30.0, pixels=PIXELS, precision="fp32")
    store = open_cache(path)
    video = data.Video("video", store, snippets * 0.4, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    net = model.Detector("losa", 384, 4, CLASSES, HEADS[head])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    before = rss_mb()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        batch = data.collate([video], [(0, snippets)], None, True, net.head.max_stride)
        losa_step(net, optimizer, batch)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    store.read(layers=None, temporal=True)
    return {"seconds": min(times), "memory_mb": peak_mb() - before, "read_seconds": time.perf_counter() - start,
            "trainable": model.trainable_parameters(net)}


def vit_small():
    return backbone.random_backbone("small", seed=0)


def case_online(snippets, _, head=None):
    net = vit_small().eval()
    clips = torch.randint(0, 256, (8, 16, PIXELS, PIXELS, 3), dtype=torch.uint8)
    before = rss_mb()
    with torch.no_grad():
        net(clips, list(LAYERS))  # warm-up
        start = time.perf_counter()
        for _ in range(2):
            tokens = net(clips, list(LAYERS))
            [net.pool(t, layer, temporal=True) for t, layer in zip(tokens, LAYERS)]
    per_snippet = (time.perf_counter() - start) / 16
    return {"seconds_per_snippet": per_snippet, "memory_mb": peak_mb() - before}


def case_full(snippets, _, head=None):
    net = vit_small().train().requires_grad_(True)
    head = model.Detector("head_only", 384, 1, CLASSES, HeadConfig())
    optimizer = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=1e-5)
    clips = torch.randint(0, 256, (snippets, 16, PIXELS, PIXELS, 3), dtype=torch.uint8)
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


def run_case(case, snippets, head="published"):
    out = subprocess.run([sys.executable, __file__, "--case", case, "--snippets", str(snippets), "--head", head],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    online = run_case("online", 16)
    small, larger = run_case("full", 4), run_case("full", 12)
    full_time = (larger["seconds"] - small["seconds"]) / 8
    full_memory = (larger["memory_mb"] - small["memory_mb"]) / 8
    rows = []
    for snippets in SNIPPETS:
        cached, small_head = run_case("cache", snippets), run_case("cache", snippets, "demo")
        online_seconds = online["seconds_per_snippet"] * snippets + cached["seconds"] - cached["read_seconds"]
        full_seconds, full_mb = full_time * snippets, full_memory * snippets
        rows += [
            {"T": snippets, "step": "LoSA from the cache (measured)", "seconds": f"{cached['seconds']:.2f}",
             "peak MB": f"{cached['memory_mb']:.0f}", "vs cache": "1x"},
            {"T": snippets, "step": "LoSA from the cache, demo-size head (measured)",
             "seconds": f"{small_head['seconds']:.2f}", "peak MB": f"{small_head['memory_mb']:.0f}",
             "vs cache": f"{online_seconds / small_head['seconds']:.0f}x faster than online"},
            {"T": snippets, "step": "frozen backbone online + LoSA (backbone extrapolated)",
             "seconds": f"{online_seconds:.0f}", "peak MB": f"{max(online['memory_mb'], cached['memory_mb']):.0f}",
             "vs cache": f"{online_seconds / cached['seconds']:.0f}x time"},
            {"T": snippets, "step": "full fine-tuning (extrapolated from 4 and 12 snippets)",
             "seconds": f"{full_seconds:.0f}", "peak MB": f"{full_mb:.0f}",
             "vs cache": f"{full_mb / cached['memory_mb']:.0f}x memory"},
        ]
    print(f"LoSA trainable parameters: {cached['trainable']:,}; backbone per snippet online "
          f"{online['seconds_per_snippet'] * 1000:.0f} ms; full fine-tuning per snippet {full_time:.2f} s, "
          f"{full_memory:.0f} MB")
    report("train", "One training step on one video of T snippets (ViT-S width, 4 tapped layers, CPU, 2 threads)",
           rows, "python benchmarks/train.py")


if __name__ == "__main__":
    torch.set_num_threads(2)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=["cache", "online", "full"])
    parser.add_argument("--snippets", type=int)
    parser.add_argument("--head", choices=list(HEADS), default="published")
    args = parser.parse_args()
    if args.case is None:
        main()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cases = {"cache": case_cache, "online": case_online, "full": case_full}
            result = cases[args.case](args.snippets, tmp, args.head)
        print(json.dumps(result))
