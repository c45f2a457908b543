"""One LoFi stage-A training step (ViT-S, 224 px, whole backbone trainable, the published
THUMOS-14 head) on the same window of one video at full fidelity and at each LoFi fidelity.

  full        every snippet at 224 px (what LoFi avoids), with and without checkpointing
  S, T, ST    the LoFi fidelities (112 px; every 4th snippet; every 2nd at 160 px), checkpointed

Each case runs in a fresh process. Activation memory is (a) what lofi.snippet_bytes estimates
for the step (the figure the budget uses) and (b) the rise of the process's peak resident size
during one forward and backward, after a first one on a single snippet has allocated the
gradients (CPU has no allocator statistics; AdamW's moments and temporaries are left out, as
they do not depend on the fidelity), with glibc told to return freed memory at once. Time is
one whole step (forward, backward, AdamW), the fastest of --repeats after that.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402
from actloc import settings  # noqa: E402
from actloc.backbones import videomae  # noqa: E402
from actloc.methods import detector  # noqa: E402
from actloc.methods import lofi  # noqa: E402
from actloc.stages import lofi as lofi_stage  # noqa: E402
from actloc.settings import HeadConfig  # noqa: E402


PIXELS, PRESET = 224, "small"
# glibc returns freed blocks of 64 KB and more to the system at once, so that the peak resident
# size follows what tensors hold (by default it keeps a few hundred MB of freed heap here).
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}
CASES = (("full", True), ("full", False), ("S", True), ("T", True), ("ST", True))


def rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Frames:
    """One synthetic video's frames in memory, read as lofi_stage.FrameReader reads decoded ones."""

    def __init__(self, count):
        generator = torch.Generator().manual_seed(0)
        self.side = PIXELS
        self.frames = torch.randint(0, 256, (count, PIXELS, PIXELS, 3), dtype=torch.uint8, generator=generator)

    def read(self, video, first, stop):
        return self.frames[first:stop].numpy()


def case(mode, checkpointing, snippets, repeats):
    torch.set_num_threads(2)
    cfg = settings.LofiConfig(checkpointing=checkpointing)
    every, side = (1, PIXELS) if mode == "full" else (settings.MODES[mode][0], lofi.side_of(mode, PIXELS, 16))
    frames = Frames((snippets - 1) * cfg.stride + cfg.snippet_frames)
    chosen = torch.arange(0, snippets, every)
    clips = lofi_stage.clips_of(frames, None, chosen, cfg, side)
    vit = videomae.random_backbone(PRESET, 0)
    net = lofi.EndToEnd(vit, detector.Detector("head_only", vit.preset.width, 1, 20, HeadConfig()), None, checkpointing)
    optimizer = torch.optim.AdamW(p for p in net.parameters() if p.requires_grad)
    targets = [(torch.tensor([[1.0, len(chosen) / 2]]), torch.tensor([3]))]

    def forward_backward(batch):
        outputs, _ = net([batch], net.detector.head.max_stride)
        net.detector.head.loss(outputs, targets)["loss"].backward()

    def step(batch):
        optimizer.zero_grad(set_to_none=False)
        forward_backward(batch)
        optimizer.step()

    forward_backward(clips[:1])  # gradients allocated: the measured rise is activations only
    optimizer.zero_grad(set_to_none=False)
    estimate = lofi.snippet_bytes(net, side, cfg, torch.autocast("cpu", enabled=False), "cpu") * len(chosen)
    before = rss_mb()
    forward_backward(clips)
    measured = peak_mb() - before
    optimizer.step()  # AdamW's first step allocates its moments; the timed steps below do not
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step(clips)
        times.append(time.perf_counter() - started)
    return {"snippets": len(chosen), "side": side, "tokens": len(chosen) * 8 * (side // 16) ** 2,
            "estimate_mb": estimate / 2**20, "measured_mb": measured, "seconds": min(times)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snippets", type=int, default=16, help="full-fidelity snippets of the window")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case[0], args.case[1] == "True", args.snippets, args.repeats)))
        return
    results = {}
    for mode, checkpointing in CASES:
        done = subprocess.run([sys.executable, __file__, "--snippets", str(args.snippets), "--repeats",
                               str(args.repeats), "--case", mode, str(checkpointing)],
                              capture_output=True, text=True, check=True, env=os.environ | MALLOC)
        results[mode, checkpointing] = json.loads(done.stdout.splitlines()[-1])
    full = results["full", True]
    rows = [{"fidelity": mode, "checkpointing": "yes" if checkpointing else "no", "snippets": r["snippets"],
             "px": r["side"], "tokens": f"{r['tokens']:,}", "activations, estimate (MB)": f"{r['estimate_mb']:.0f}",
             "peak rise, measured (MB)": f"{r['measured_mb']:.0f}",
             "x less than full (est. / meas.)": f"{full['estimate_mb'] / r['estimate_mb']:.1f} / "
                                                 f"{full['measured_mb'] / max(r['measured_mb'], 1):.1f}",
             "step (s)": f"{r['seconds']:.2f}", "x faster": f"{full['seconds'] / r['seconds']:.1f}"}
            for (mode, checkpointing), r in results.items()]
    report("lofi", f"LoFi stage-A step, ViT-S {PIXELS} px whole backbone + published head, one window of "
                   f"{args.snippets} snippets, CPU 2 threads", rows)


if __name__ == "__main__":
    main()
