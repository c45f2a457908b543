"""One training step of partial (the upper blocks tuned from cached block tokens) against LoFi's
stage A at the same fidelity and trainable blocks (frames through the whole backbone, its top
half trainable) and against losa from the cache, on one window of one video; then partial's
activation memory as the window grows, and the token cache's bytes a snippet at each grid.

  lofi        ViT-S 224 px, every snippet: frames, lower 6 blocks without gradients, upper 6 trained
  partial     the same upper 6 blocks on cached tokens of block 6 at grid g (adapters in each, and
              with "tuned 6" the 6 blocks too, as LoFi trains them), then LoSA
  losa        LoSA and the head on the cached taps

Every case runs in a fresh process, with the published THUMOS-14 head. Time: one step
(forward, backward, AdamW), the fastest of --repeats after a first. Memory: the bytes autograd
keeps for backward during the step (engine.device.saved_bytes: the activations, which grow
with the window), and the rise of the process's peak resident size over it.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, report  # noqa: E402
from actloc.backbones import videomae  # noqa: E402
from actloc.backbones import default_layers, presets  # noqa: E402
from actloc.engine.device import saved_bytes  # noqa: E402
from actloc.methods import lofi  # noqa: E402
from actloc.methods.detector import Detector  # noqa: E402
from actloc.settings import HeadConfig, LofiConfig, LosaConfig, PartialConfig  # noqa: E402
from actloc.store import windows  # noqa: E402

MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # freed memory returned at once (see benchmarks/lofi.py)
PIXELS, STEPS = 224, 8
PRESETS_OF = presets()  # VideoMAE's


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def store_of(preset, grid):
    """The attributes of a cache of `preset` with block tokens of its middle block at `grid`."""
    depth = PRESETS_OF[preset].depth
    return {"backbone": preset, "preset": preset, "identity": "random:0", "layers": default_layers(depth),
            "channels": PRESETS_OF[preset].width, "snippet_frames": 16, "stride": 4,
            "block_tokens": {"block": depth // 2, "grid": grid, "final_norm": "fc_norm", "layer_scale": False}}


def train_step(net, parameters, loss_of):
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss_of().backward()
        optimizer.step()
    return step


def case(kind, preset, grid, tuned, snippets, repeats):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    width, targets = PRESETS_OF[preset].width, [(torch.tensor([[1.0, snippets / 2]]), torch.tensor([3]))]
    if kind == "lofi":
        cfg = LofiConfig()
        vit = videomae.random_backbone(preset, 0)
        net = lofi.EndToEnd(vit, Detector("head_only", width, 1, 20, HeadConfig()), PRESETS_OF[preset].depth // 2)
        frames = torch.randint(0, 256, ((snippets - 1) * cfg.stride + cfg.snippet_frames, PIXELS, PIXELS, 3),
                               dtype=torch.uint8)
        clips = frames.unfold(0, cfg.snippet_frames, cfg.stride)[:snippets].permute(0, 4, 1, 2, 3)

        def loss_of():
            outputs, _ = net([clips], net.detector.head.max_stride)
            return net.detector.head.loss(outputs, targets)["loss"]
    else:
        store = store_of(preset, grid)
        layers = len(store["layers"])
        if kind == "partial":
            net = Detector("partial", width, layers, 20, HeadConfig(), PartialConfig(tune_blocks=tuned), store)
        else:
            net = Detector("losa", width, layers, 20, HeadConfig(), LosaConfig())
        rows = {"pooled": torch.randn(layers, snippets, width), "temporal": torch.randn(layers, snippets, STEPS, width)}
        if kind == "partial":
            rows["block_tokens"] = torch.randn(1, snippets, STEPS, grid * grid, width)
        # Padded to the head's stride as a training batch is; padding never runs the upper blocks.
        batch = {name: windows.padded([x], net.head.max_stride)[0] for name, x in rows.items()}
        batch = {"block_tokens": None} | batch | {"mask": windows.padded([rows["pooled"]], net.head.max_stride)[1]}

        def loss_of():
            return net.head.loss(net(batch), targets)["loss"]
    net.train()
    trainable = [p for p in net.parameters() if p.requires_grad]
    step = train_step(net, trainable, loss_of)
    kept = saved_bytes(loss_of, net)
    before = rss_mb()
    step()  # AdamW's moments and the gradients allocated
    seconds = best_time(step, repeats)
    return {"seconds": seconds, "kept_mb": kept / 2**20, "peak_rise_mb": peak_mb() - before,
            "trainable": sum(p.numel() for p in trainable)}


def run(kind, preset, grid, snippets, repeats, tuned=0):
    done = subprocess.run([sys.executable, __file__, "--case", kind, preset, str(grid), str(tuned), str(snippets),
                           "--repeats", str(repeats)], capture_output=True, text=True, env=os.environ | MALLOC)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snippets", type=int, default=16, help="the window of the step comparison")
    parser.add_argument("--growth", type=int, nargs="+", default=[64, 256, 1024],
                        help="windows of the memory-growth rows (partial, ViT-S, grid 4)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, preset, grid, tuned, snippets = args.case
        print(json.dumps(case(kind, preset, int(grid), int(tuned), int(snippets), args.repeats)))
        return
    rows, lofi_step = [], None
    cases = [("lofi", "small", 14, 6), ("partial", "small", 14, 0), ("partial", "small", 14, 6),
             ("partial", "small", 4, 0), ("partial", "small", 4, 6), ("partial", "small", 2, 0),
             ("losa", "small", 4, 0), ("partial", "giant", 4, 0)]
    for kind, preset, grid, tuned in cases:
        r = run(kind, preset, grid, args.snippets, args.repeats, tuned if kind == "partial" else 0)
        lofi_step = lofi_step or r["seconds"]
        upper = f"{PRESETS_OF[preset].depth // 2} of {PRESETS_OF[preset].depth}"
        trained = {"lofi": f"{upper}, tuned", "losa": "none"}.get(kind, f"{upper}, adapters" + (
            f" + {tuned} tuned" if tuned else ""))
        rows.append({"method": kind, "backbone": f"ViT-{preset[0].upper()}", "upper blocks trained": trained,
                     "tokens a snippet": "frames" if kind == "lofi" else f"{STEPS} x {grid}x{grid}" if kind == "partial"
                     else "taps", "snippets": args.snippets, "step (s)": f"{r['seconds']:.3f}",
                     "x faster than lofi": f"{lofi_step / r['seconds']:.1f}" if preset == "small" else "-",
                     "activations kept (MB)": f"{r['kept_mb']:.0f}", "peak rise (MB)": f"{r['peak_rise_mb']:.0f}",
                     "trainable parameters": f"{r['trainable']:,}"})
    for snippets in args.growth:
        r = run("partial", "small", 4, snippets, 1)
        rows.append({"method": "partial", "backbone": "ViT-S", "upper blocks trained": "6 of 12, adapters",
                     "tokens a snippet": f"{STEPS} x 4x4", "snippets": snippets, "step (s)": f"{r['seconds']:.3f}",
                     "x faster than lofi": "-", "activations kept (MB)": f"{r['kept_mb']:.0f}",
                     "peak rise (MB)": f"{r['peak_rise_mb']:.0f}", "trainable parameters": f"{r['trainable']:,}"})
    for grid in (1, 2, 4, 8, 16):
        rows.append({"method": "token cache", "backbone": "ViT-S / ViT-g", "upper blocks trained": "-",
                     "tokens a snippet": f"{STEPS} x {grid}x{grid}", "snippets": 1, "step (s)": "-",
                     "x faster than lofi": "-",
                     "activations kept (MB)": f"{STEPS * grid**2 * 384 * 2 / 1024:.1f} KB / "
                                              f"{STEPS * grid**2 * 1408 * 2 / 1024:.1f} KB (float16)",
                     "peak rise (MB)": "-", "trainable parameters": "-"})
    report("partial", "One training step, CPU 2 threads: partial vs LoFi stage A (frames, top half trained) vs "
                      "losa, one window; partial's memory as the window grows; token cache bytes", rows)


if __name__ == "__main__":
    main()
