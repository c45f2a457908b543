"""The training read path at THUMOS-14 scale: caches shaped like VideoMAEv2-g's of THUMOS-14
validation videos (4 layers x 1,408 channels with temporal tokens, 16 frames every 4 at 30 fps;
lengths drawn from the shipped metadata), written by the project's own writer, for 12 and 48
videos; LoSA with the THUMOS-14 settings (batch 2, windows of 2,304 snippets, the published head).

- reader MB/s: bytes a second of an epoch's windows (float16 as stored) through the training
  reader alone (train.batches: windows drawn, read and padded into a batch), cold (page cache
  dropped before the epoch) and warm, beside `cat` of the same stores' files (cold: the best
  of two, each alternated with the reader's);
- first step: seconds from `actloc train`'s start (loading the index, the standardisation, the
  first batch) until its first batch goes to the device: the step itself is the model's cost;
- epoch: an epoch of training's batches read ahead while the steps run, beside the same steps
  on batches gathered in memory first (compute only) and the reads alone (read only, warm);
  peak RSS of the read-ahead run. Each process runs two epochs and reports its second, as
  training's epochs after the first are (the first also pays for the process's warm-up).

A step is, by default, that of a device (`--step-ms`, 50 ms): the process waits while the
read-ahead thread works, as it does while a GPU runs LoSA (tens of ms at this width on an H100);
LoSA's real step on a CPU takes ~40 s at this shape, which any reading hides. `--step-ms 0` runs
the real step, on CUDA where there is one. Every figure comes from a fresh process, with torch
on `--threads` threads (1: "one core"). Training keeps no video in memory (memory_mb 0: every
epoch reads every window, the case of a dataset beyond memory). Cold figures need root (they
drop the page cache); without it they are said to be warm.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYERS, WIDTH, STEPS, FPS, FRAMES, STRIDE = [10, 20, 30, 40], 1408, 8, 30.0, 16, 4
SETTINGS = {"method": "losa", "train": {"epochs": 1, "warmup_epochs": 0, "batch": 2, "max_length": 2304,
                                        "memory_mb": 0, "lr": 1e-4}}
CLASSES = [f"class {k}" for k in range(20)]
EPOCHS = 2  # an epoch's figures are its process's last epoch's, but for cold reads, its first


def durations(videos):
    """`videos` THUMOS-14 validation durations, drawn without replacement (seeded)."""
    with open(ROOT / "resources/thumos14/metadata/thumos14_valid_metadata.csv", newline="") as f:
        all_durations = [float(row["video-duration"]) for row in csv.DictReader(f)]
    return list(np.random.default_rng(0).choice(all_durations, videos, replace=False))


def make_dataset(folder, videos, width=WIDTH):
    """index.json and annotations.json of `videos` synthetic ViT-g stores, `width` channels
    wide (kept between runs)."""
    from actloc.io import write_json
    from actloc.store.snippets import snippet_count
    from actloc.store.stores import FORMAT, array_shapes, StoreWriter
    import zarr

    folder = Path(folder)
    index = folder / "index.json"
    if index.is_file() and json.loads(index.read_text()).get("format") == FORMAT:
        return index, folder / "annotations.json"
    rng = np.random.default_rng(0)
    # One block of activations, appended again and again: what matters here is bytes, not values.
    pooled = rng.normal(0, 1, (len(LAYERS), 1024, width)).astype(np.float16)
    temporal = (pooled[:, :, None] + rng.normal(0, 0.5, (len(LAYERS), 1024, STEPS, width))).astype(np.float16)
    stores, database = {}, {}
    for i, seconds in enumerate(durations(videos)):
        name = f"video_validation_{i:07d}"
        snippets = snippet_count(round(seconds * FPS), FRAMES, STRIDE)
        path = folder / "stores" / f"{name}.zarr"
        writer = StoreWriter(zarr.open_group(path, mode="w"), name, LAYERS,
                             array_shapes(len(LAYERS), width, STEPS), snippets)
        for start in range(0, snippets, 1024):
            n = min(1024, snippets - start)
            writer.append({"pooled": pooled[:, :n], "temporal": temporal[:, :n]})
        writer.finish(backbone="vitg", preset="giant", identity="synthetic", snippet_frames=FRAMES, stride=STRIDE,
                      fps=FPS, pixels=224, precision="bf16", video=name)
        stores[name] = {"path": str(path), "snippets": snippets}
        starts = np.sort(rng.uniform(0, seconds - 10, 8))
        database[name] = {"subset": "validation", "duration": seconds, "fps": FPS, "ambiguous": [],
                          "annotations": [{"segment": [s, s + float(rng.uniform(2, 10))],
                                           "label": CLASSES[int(rng.integers(20))]} for s in starts]}
        print(f"wrote {name}: {snippets} snippets", file=sys.stderr)
    write_json(folder / "annotations.json", {"classes": CLASSES, "database": database})
    write_json(index, {"stores": stores, "missing": [], "format": FORMAT})
    return index, folder / "annotations.json"


def store_files(index):
    return [p for entry in json.loads(Path(index).read_text())["stores"].values()
            for p in Path(entry["path"]).rglob("*") if p.is_file()]


def drop_page_cache():
    """Whether the page cache could be dropped (root only)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cat_seconds(files):
    start = time.perf_counter()
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def child(index, annotations, args, *what):
    """Run one measurement in a fresh process: (its JSON answer, its peak RSS in MB)."""
    process = subprocess.Popen([sys.executable, __file__, "--child", *what, str(index), str(annotations),
                                "--threads", str(args.threads), "--step-ms", str(args.step_ms)],
                               stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"data_path: the {' '.join(what)} measurement failed (status {status})")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


class FirstBatch(Exception):
    pass


def measure(mode, index, annotations, step_ms):
    """The child's side: one measurement, as a dict."""
    import torch

    from actloc.engine.ahead import ahead
    from actloc.engine.device import resolve_device
    from actloc.methods import detector
    from actloc.methods import full_settings
    from actloc.settings import TrainConfig
    from actloc.stages import train
    from actloc.store import windows

    start = time.perf_counter()
    if mode == "first":  # `actloc train` itself, stopped as its first batch reaches the device
        def stop(batch, device):
            raise FirstBatch

        windows.to_device = stop
        try:
            train.train(index, annotations, "validation", SETTINGS, *(Path(index).parent / "x",) * 3)
        except FirstBatch:
            return {"seconds": time.perf_counter() - start}
    # an epoch of training's batches: read ahead while stepping, gathered first, or only read
    settings = full_settings(SETTINGS)
    cfg, device = TrainConfig(**settings["train"]), resolve_device("auto")
    videos, classes = windows.load(index, annotations, "validation")
    net = detector.build(settings, videos[0].cache.attrs, len(classes)).to(device)
    train.fit_standardisation(net, videos, net.reads)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)

    def step(batch):
        if step_ms:  # a device's step: the process waits, the read-ahead thread runs
            time.sleep(step_ms / 1000)
            return
        batch = windows.to_device(batch, device)
        loss = net.head.loss(net(batch), batch["targets"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    buffers = None if mode == "compute" else train.batch_buffers(videos, net.reads, cfg.batch, cfg.max_length,
                                                                 net.head.max_stride, cfg.read_ahead, device)
    epochs = []
    for number in range(EPOCHS):
        if mode == "read_cold":
            drop_page_cache()
        epoch = train.batches(videos, net.reads, cfg, cfg.max_length, net.head.max_stride, windows.KeptReads(0),
                              torch.Generator().manual_seed(cfg.seed * 1_000_003 + number), buffers)
        if mode == "compute":
            epoch = list(epoch)
        began, steps, snippets = time.perf_counter(), 0, 0
        for batch in ahead(epoch, cfg.read_ahead if mode == "overlapped" else 0):
            if mode in ("overlapped", "compute"):
                step(batch)
            steps, snippets = steps + 1, snippets + sum(batch["lengths"])
        attrs = videos[0].cache.attrs
        read = snippets * len(attrs["layers"]) * (1 + STEPS) * attrs["channels"] * 2  # float16 bytes of the windows
        epochs.append({"seconds": time.perf_counter() - began, "steps": steps, "bytes": read})
    return {"epochs": epochs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/actloc-data-path"),
                        help="where the synthetic stores are written (and kept for the next run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--step-ms", type=float, default=50,
                        help="a training step's milliseconds: a device's step, the process waiting while the "
                             "read-ahead thread runs (LoSA at this width on an H100: tens of ms); 0: LoSA's "
                             "real step on this machine's device")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(*args.child, args.step_ms)))
        return
    rows = []
    for videos in args.videos:
        index, annotations = make_dataset(args.folder / str(videos), videos)
        files = store_files(index)
        stored = sum(p.stat().st_size for p in files)
        cold = drop_page_cache()
        cat_cold, cold_read = math.inf, {"seconds": math.inf, "bytes": 0}
        for _ in range(2):  # alternated, the best of each: this disk's speed varies by 2x from minute to minute
            drop_page_cache()
            cat_cold = min(cat_cold, cat_seconds(files))
            read = child(index, annotations, args, "read_cold")[0]["epochs"][-1]
            cold_read = min(cold_read, read, key=lambda r: r["seconds"] / max(r["bytes"], 1))
        cat_warm = min(cat_seconds(files) for _ in range(2))
        warm_read = child(index, annotations, args, "read_only")[0]["epochs"][-1]
        first = child(index, annotations, args, "first")[0]["seconds"]
        overlapped, rss = child(index, annotations, args, "overlapped")
        overlapped = overlapped["epochs"][-1]
        compute = child(index, annotations, args, "compute")[0]["epochs"][-1]["seconds"]
        reading = warm_read["seconds"]
        rows.append({
            "videos": videos, "stored GB": f"{stored / 1e9:.2f}",
            "cat MB/s cold / warm": f"{stored / cat_cold / 1e6:,.0f} / {stored / cat_warm / 1e6:,.0f}",
            "reader MB/s cold / warm": f"{cold_read['bytes'] / cold_read['seconds'] / 1e6:,.0f} / "
                                       f"{warm_read['bytes'] / reading / 1e6:,.0f}",
            "reader cold / cat cold": f"{cold_read['bytes'] / cold_read['seconds'] / (stored / cat_cold):.0%}"
                                      if cold else "n/a (not root: all warm)",
            "first step s": f"{first:.1f}", "steps": overlapped["steps"],
            "epoch s": f"{overlapped['seconds']:.1f}", "compute only s": f"{compute:.1f}",
            "read only s": f"{reading:.1f}", "epoch / max(both)": f"{overlapped['seconds'] / max(compute, reading):.2f}",
            "peak RSS GB": f"{rss / 1024:.2f}"})
    step = f"{args.step_ms:g} ms steps (emulated)" if args.step_ms else "LoSA's steps"
    report("data_path", f"Training read path, ViT-g-shaped THUMOS-14 caches, {step}, {args.threads} torch "
           "thread(s)", rows)


if __name__ == "__main__":
    main()
