"""The GPU check: what one GPU does with actloc at the real shape, in one command (meant to take
under 8 minutes on an H100). Each part runs the project's own code:

  decode  a 60 s video generated at 1280x720, 30 fps, normalised as THUMOS-14's are (30 fps,
          short side 224: the decode stage's decode.normalize, on the CPU)
  cache   ViT-g (random weights at the official shapes: 1,408 wide, 40 blocks, patch 14, 224 px)
          in bf16 through the cache stage (cache.build_all: decoding, snippet assembly,
          forward, pooling of the 4 tapped layers and partial's block tokens, float16 Zarr
          writes) over that video three times, at batch 4, 8 and 16: clips a second, the
          backbone's set-up (weights made and moved) timed apart and taken out; beside it, the
          bare forward on clips already on the GPU, and the peak GPU memory
  step    one training step (forward, backward, AdamW) at ViT-g's width with the THUMOS-14 head
          and a batch of 2 windows of 2,304 snippets: losa on the 4 taps, and partial (blocks
          21-40 from block 20's tokens at grid 4, adapters in each, then LoSA) on the windows
          its 40 GB budget fits; bf16 (autocast) and fp32, and losa with deterministic
          algorithms as training runs and without; the median step after a warm-up, and the
          peak GPU memory
  read    the training reader's MB/s (benchmarks/data_path.py) over ViT-g-shaped stores of 6
          THUMOS-14-length videos, warm, and cold as root

`--smoke` runs the same code at toy shapes (the tiny backbone at 112 px in float32, a 1 s video,
a 64-wide head, windows of 32 snippets, 2 stores 64 wide) on whatever device there is, so the
tests keep it working; its table goes to --results (a temporary folder in the tests).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_path  # noqa: E402
from common import RESULTS, report  # noqa: E402
from partial import store_of  # noqa: E402
from actloc.backbones import videomae  # noqa: E402
from actloc.engine.device import resolve_device  # noqa: E402
from actloc.methods.detector import Detector  # noqa: E402
from actloc.settings import HeadConfig, LosaConfig, PartialConfig, TrainConfig  # noqa: E402
from actloc.stages import backbone, cache  # noqa: E402
from actloc.media import ffmpeg_exe  # noqa: E402
from actloc.stages.decode import normalize  # noqa: E402


@dataclass(frozen=True)
class Shape:
    preset: str
    pixels: int  # the backbone's input side
    precision: str  # the cache stage's
    seconds: int  # of the generated video
    source: str  # its frame size
    batches: tuple  # the cache stage's
    head: dict  # HeadConfig's settings
    window: int  # snippets of a training window
    grid: int  # partial's token grid
    read_videos: int  # stores the reader reads
    read_width: int  # their channels
    step_seconds: float  # a step case stops repeating after this long


REAL = Shape("giant", 224, "bf16", 60, "1280x720", (4, 8, 16), {}, 2304, 4, 6, data_path.WIDTH, 30.0)
SMOKE = Shape("tiny", 112, "fp32", 1, "1280x720", (2, 4),
              {"width": 64, "levels": 3, "regression_ranges": ((0, 4), (4, 8), (8, 1e4))}, 32, 1, 2, 64, 5.0)
BATCH = 2  # THUMOS-14's windows a step
STEPS = 8  # tubelet steps of a snippet (16 frames, tubelet 2)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device, beside=0):
    """The peak GPU memory since reset_peak, less `beside` bytes held throughout."""
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{(torch.cuda.max_memory_allocated(device) - beside) / 2**30:.1f}"


def make_video(folder, shape):
    """A noisy test pattern of `shape.seconds` at `shape.source`, normalised as THUMOS-14's
    videos are; (the normalised video, seconds its normalisation took)."""
    source, video = folder / "source.mp4", folder / "video.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=s={shape.source}:r=30,noise=alls=20:allf=t", "-t", str(shape.seconds),
                    "-c:v", "libx264", "-preset", "veryfast", str(source)], check=True)
    began = time.perf_counter()
    normalize(source, video, fps=30, short_side=224)
    return video, time.perf_counter() - began


def cache_rows(shape, folder, device):
    video, decode_seconds = make_video(folder, shape)
    rows = [{"part": "decode", "setting": f"{shape.seconds} s at {shape.source} to 30 fps, short side 224 (CPU)",
             "result": f"{shape.seconds / decode_seconds:.1f} x real time", "peak GPU GB": ""}]
    settings = backbone.describe("vitg", shape.preset, pixels=shape.pixels, precision=shape.precision)
    began = time.perf_counter()
    model, _ = videomae.load(shape.preset)
    model.to(device)
    synchronize(device)
    set_up = time.perf_counter() - began
    rows.append({"part": "cache", "setting": f"{shape.preset}: weights made and moved to {device.type}",
                 "result": f"{set_up:.1f} s", "peak GPU GB": ""})
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=shape.precision == "bf16")
    for batch in shape.batches:
        reset_peak(device)
        held = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0  # the bare forward's weights
        began = time.perf_counter()
        attrs, _ = cache.build_all([video] * 3, [folder / f"b{batch}-{k}.zarr" for k in range(3)], settings,
                                   batch=batch, device=device)
        stage = time.perf_counter() - began - set_up
        clips = 3 * attrs[video]["snippets"]
        stage_peak = peak_gb(device, held)
        frames = torch.randint(0, 256, (batch, 16, shape.pixels, shape.pixels, 3), dtype=torch.uint8, device=device)
        with torch.inference_mode(), autocast:
            model(frames, settings["layers"])  # warm-up
            synchronize(device)
            began = time.perf_counter()
            for _ in range(-(-clips // batch)):
                model(frames, settings["layers"])
            synchronize(device)
        bare = time.perf_counter() - began
        rows.append({"part": "cache", "setting": f"{shape.preset} {shape.precision}, batch {batch}: stage (bare forward)",
                     "result": f"{clips / stage:.1f} ({clips / bare:.1f}) clips/s", "peak GPU GB": stage_peak})
    return rows


def step_row(method, precision, shape, device, deterministic=True):
    """One training step's median time and peak memory, as a table row."""
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.manual_seed(0)
    store = store_of(shape.preset, shape.grid)  # block tokens of the middle block: ViT-g's 20th
    width, layers = store["channels"], len(store["layers"])
    head = HeadConfig(**shape.head)
    settings = PartialConfig() if method == "partial" else LosaConfig()
    reset_peak(device)
    net = Detector(method, width, layers, 20, head, settings, store).to(device).train()
    window = shape.window
    if method == "partial":
        window = net.features.snippets_per_step(net, TrainConfig(batch=BATCH, max_length=shape.window), device)
    window -= window % net.head.max_stride
    half = torch.float16
    batch = {"pooled": torch.randn(BATCH, layers, window, width, device=device, dtype=half),
             "temporal": torch.randn(BATCH, layers, window, STEPS, width, device=device, dtype=half),
             "block_tokens": (torch.randn(BATCH, 1, window, STEPS, shape.grid**2, width, device=device, dtype=half)
                              if method == "partial" else None),
             "mask": torch.ones(BATCH, window, dtype=torch.bool, device=device)}
    targets = [(torch.tensor([[window / 4, window / 2]], device=device), torch.tensor([3], device=device))] * BATCH
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = net.head.loss(net(batch), targets)["loss"]
        loss.backward()
        optimizer.step()
        synchronize(device)

    setting = f"{method} {precision}{'' if deterministic else ', not deterministic'}, {BATCH} x {window} snippets"
    try:
        step()  # warm-up: kernels chosen, AdamW's state made
        times, began = [], time.perf_counter()
        while len(times) < 5 and (not times or time.perf_counter() - began < shape.step_seconds):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return {"part": "step", "setting": setting, "result": "out of memory", "peak GPU GB": peak_gb(device)}
    finally:
        torch.use_deterministic_algorithms(False)
    return {"part": "step", "setting": setting, "result": f"{statistics.median(times) * 1000:,.0f} ms",
            "peak GPU GB": peak_gb(device)}


def read_rows(shape, folder):
    """The training reader's MB/s on stores of THUMOS-14 lengths (data_path.py's measurement)."""
    index, annotations = data_path.make_dataset(folder, shape.read_videos, shape.read_width)
    args = SimpleNamespace(threads=1, step_ms=0)
    modes = ["read_only"] + (["read_cold"] if data_path.drop_page_cache() else [])
    rows = []
    for mode in modes:
        epoch = data_path.child(index, annotations, args, mode)[0]["epochs"][-1]
        rows.append({"part": "read", "setting": f"training reader, {mode.removeprefix('read_').replace('only', 'warm')}, "
                                                f"{shape.read_videos} stores {shape.read_width} wide",
                     "result": f"{epoch['bytes'] / epoch['seconds'] / 1e6:,.0f} MB/s", "peak GPU GB": ""})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy shapes, for the tests")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the table is written")
    args = parser.parse_args()
    shape, device = (SMOKE if args.smoke else REAL), resolve_device(args.device)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as training sets it
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = cache_rows(shape, tmp, device)
        for method, precision, deterministic in [("losa", "bf16", True), ("losa", "bf16", False),
                                                 ("losa", "fp32", True), ("partial", "bf16", True),
                                                 ("partial", "fp32", True)]:
            rows.append(step_row(method, precision, shape, device, deterministic))
            print(rows[-1], file=sys.stderr)
        rows += read_rows(shape, tmp / "stores")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report("gpu_smoke" if args.smoke else "gpu", f"actloc on one {name}{' (smoke: toy shapes)' if args.smoke else ''}",
           rows, args.results)


if __name__ == "__main__":
    main()
