"""Train stage: one method (its features + the head) against the cache, never touching the
backbone, through the shared loop (engine.loop). The method's own training, where it has one
(LoFi's stage A on decoded videos), is dispatched by the command line instead.
"""

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..engine import distributed, loop
from ..engine.ahead import ahead
from ..engine.device import make_deterministic
from ..io import InputError
from ..methods import detector, full_settings
from ..settings import TrainConfig
from ..store import windows
from ..store.stores import SHARED_ATTRS
from .backbone import read_description

log = logging.getLogger(__name__)


STATISTICS_VIDEOS = 64  # the input standardisation is estimated on at most this many training videos
PIECE = 1024  # snippets read at a time where the standardisation is fitted on activations


def fit_standardisation(net, videos, what):
    """The detector's input standardisation from the first STATISTICS_VIDEOS videos: their
    stores' recorded moments (milliseconds, whatever their length), or, for a method that
    recomputes taps from the block tokens or stores without moments (formats 1 and 2), the
    activations read PIECE snippets at a time."""
    chosen = videos[:STATISTICS_VIDEOS]
    recorded = [] if net.tokens else [video.cache.moments(what["layers"], what["temporal"]) for video in chosen]
    if recorded and all(part is not None for part in recorded):
        net.set_standardisation(recorded)
        return
    if not net.tokens:
        log.warning("%s: a store of cache format %s records no moments: reading %d videos to fit the "
                    "standardisation; rebuild the cache for a start without it", chosen[0].cache.path.parent,
                    chosen[0].cache.attrs["actloc_cache"], len(chosen))
    net.fit_standardisation(net.read_inputs(video.cache.read(start, min(start + PIECE, video.cache.snippets), **what))
                            for video in chosen for start in range(0, video.cache.snippets, PIECE))


def batches(videos, what, cfg, max_length, multiple, reads, generator, buffers=None, world=distributed.World()):
    """An epoch's padded batches (windows.collate, in `buffers` when given): the videos in an
    order, and each one's window, drawn from `generator`; of a data-parallel training, this
    process's share of each (None where it has none). While a batch is read, the kernel is
    asked to start reading the next one's files (Cache.advise), so that cold reads overlap."""
    order = torch.randperm(len(videos), generator=generator).tolist()
    plan = []
    for first in range(0, len(order), cfg.batch):
        chosen = [videos[i] for i in order[first:first + cfg.batch]]
        # Every process draws every window, so that their generators stay alike.
        spans = [windows.training_window(v.length, v.segments, max_length, generator, cfg.keep_fraction)
                 for v in chosen]
        plan.append((world.share(chosen), world.share(spans)))
    with ThreadPoolExecutor(1, thread_name_prefix="actloc-advise") as advising:
        def advise(k):
            for video, (start, stop) in zip(*plan[k]) if k < len(plan) else ():
                if not video.steps:  # a resampled video is read whole
                    advising.submit(video.cache.advise, start, stop, **what)

        advise(0)
        for k, (chosen, spans) in enumerate(plan):
            advise(k + 1)
            yield windows.collate(chosen, spans, what, multiple, reads, buffers) if chosen else None


def batch_buffers(videos, what, windows_per_batch, max_length, multiple, read_ahead, device):
    """The ring that training's batches are read into, its slots sized for the largest batch:
    read ahead by `read_ahead`, one being read and one in use (windows.BatchBuffers)."""
    longest = min(max_length, max(video.length for video in videos))
    largest = windows.batch_layout(videos[0], what, windows_per_batch, -(-longest // multiple) * multiple)
    return windows.BatchBuffers(read_ahead + 2, largest, pin=device.type == "cuda")


def train(index, annotations, subset, settings, out_model, out_log, out_summary, checkpoint=None, device="auto",
          backbone=None, expect=None):
    """The `actloc train` command for the methods that train on a cache. Returns the summary
    written to `out_summary` (None in a data-parallel process other than the first, which
    writes nothing). `backbone`: the JSON of `actloc backbone` that built the cache, which a
    method tuning its upper blocks from block tokens (partial) loads them from; `expect`: what
    every store must record (this run's settings, windows.load). Under torchrun or srun, the
    processes train data-parallel (engine.distributed): `train.batch` windows a step in all."""
    settings = full_settings(settings)
    cfg = TrainConfig(**settings["train"])
    with distributed.joined(device, cfg.batch) as (world, device):
        return train_on(world, device, cfg, settings, index, annotations, subset, out_model, out_log, out_summary,
                        checkpoint, backbone, expect)


def train_on(world, device, cfg, settings, index, annotations, subset, out_model, out_log, out_summary, checkpoint,
             backbone, expect):
    """`train`, as one of the processes of `world` on `device`."""
    make_deterministic(cfg.seed)
    videos, classes = windows.load(index, annotations, subset, cfg.fixed_steps, cfg.actionness, expect)
    attrs = videos[0].cache.attrs
    net = detector.build(settings, attrs, len(classes)).to(device)
    max_length = cfg.max_length
    if net.tokens:
        if backbone is None:
            raise InputError(f"train: method {settings['method']} tunes the backbone's upper blocks: it needs "
                             "--backbone, the JSON of the backbone that built the cache")
        net.features.load_backbone(read_description(backbone), attrs)
        net.to(device)  # the loaded weights are on the CPU
        max_length = net.features.snippets_per_step(net, cfg, device)
    what = net.reads
    fit_standardisation(net, videos, what)
    reads = windows.KeptReads(cfg.memory_mb)
    store = {k: attrs.get(k) for k in SHARED_ATTRS}
    key = loop.fingerprint({"settings": settings, "store": store}, index, annotations)

    buffers = batch_buffers(videos, what, len(world.share(range(cfg.batch))), max_length, net.head.max_stride,
                            cfg.read_ahead, device)
    precision = cfg.precision or ("bf16" if device.type == "cuda" and net.tokens else "fp32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step_losses(epoch, generator):
        for batch in ahead(batches(videos, what, cfg, max_length, net.head.max_stride, reads, generator, buffers,
                                   world), cfg.read_ahead):
            if batch is None:
                yield net.head.no_loss(world.total)
                continue
            batch = windows.to_device(batch, device)
            with autocast:  # left before yielding: backward and the optimiser step run outside it
                losses = net.head.loss(net(batch), batch["targets"], total=world.total)
            yield losses

    groups = loop.parameter_groups(net, cfg.weight_decay, cfg.lr)
    trained, rows = loop.optimise(net, groups, cfg, math.ceil(len(videos) / cfg.batch), step_losses, key,
                                  checkpoint, device, f"train {settings['method']}", world)
    if not world.main:
        return None
    summary = loop.summarise(settings["method"], cfg, rows, len(videos), net, device) | {
        "precision": precision, "processes": world.size}
    detector.save(out_model, trained, settings, classes, store, summary)
    loop.write_log(out_log, out_summary, rows, summary)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return summary
