"""The training loop every method shares: AdamW with no weight decay on biases, norms and what a
method names (LoSA's gates); per-iteration linear warm-up then cosine decay; gradient clipping;
an EMA of the weights, which is what is saved. Each epoch draws its video order and windows from
a generator seeded by (seed, epoch), and algorithms are deterministic, so a rerun gives the same
weights, and a training resumed from its per-epoch checkpoint ends where an uninterrupted one
would.
"""

import copy
import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch

from ..io import atomic_path, load_weights, write_json, write_text
from ..progress import progress
from .device import peak_memory_mb
from .distributed import World

log = logging.getLogger(__name__)


def lr_factor(step, warmup, total):
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class EMA:
    """Exponential moving average of a model's weights; the decay ramps up as (1+n)/(10+n)
    over the first updates, so short trainings are not dominated by the initial weights."""

    def __init__(self, source, decay):
        self.model = copy.deepcopy(source).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, source):
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        pairs = list(zip(self.model.state_dict().values(), source.state_dict().values()))
        floats = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
        torch._foreach_lerp_([m for m, _ in floats], [t for _, t in floats], 1 - decay)
        for mine, theirs in pairs:
            if not mine.is_floating_point():
                mine.copy_(theirs)


def fingerprint(obj, *paths):
    """SHA-256 of a JSON-able object and the bytes of files: what a checkpoint was trained from."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode())
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def no_decay_names(net):
    """The parameters that modules of `net` keep out of weight decay by naming them, as their
    own parameters, in a NO_DECAY attribute (LoSA's gates)."""
    return {f"{prefix}.{name}".lstrip(".") for prefix, module in net.named_modules()
            for name in getattr(module, "NO_DECAY", ())}


def decays(name, param, excluded=frozenset()):
    """Whether weight decay applies to a parameter: to weight matrices and kernels, not to biases,
    norms, scales, nor what a module names in NO_DECAY (`excluded`: see no_decay_names)."""
    return param.ndim > 1 and name not in excluded


def parameter_groups(net, weight_decay, lr):
    """The trainable parameters of `net` at learning rate `lr`, in two groups: with weight
    decay and without (see `decays`)."""
    params, excluded = [(name, p) for name, p in net.named_parameters() if p.requires_grad], no_decay_names(net)
    return [{"params": [p for name, p in params if decays(name, p, excluded)], "weight_decay": weight_decay,
             "lr": lr},
            {"params": [p for name, p in params if not decays(name, p, excluded)], "weight_decay": 0.0, "lr": lr}]


def trainable_parameters(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def resume(checkpoint, key, device, net, ema, optimizer, scheduler):
    """Load a checkpoint of this very training (same fingerprint) into the given objects and
    return its log rows; [] when there is none or it belongs to another training."""
    if not Path(checkpoint).is_file():
        return []
    state = load_weights(checkpoint)
    if state["fingerprint"] != key:
        log.info("%s: from other settings or inputs; starting afresh", checkpoint)
        return []
    net.load_state_dict(state["model"])
    ema.model.load_state_dict(state["ema"])
    ema.updates = state["ema_updates"]
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("%s: resuming after epoch %d", checkpoint, len(state["log"]))
    return state["log"]


def optimise(net, groups, cfg, per_epoch, step_losses, key, checkpoint, device, desc, world=World()):
    """The training loop every method shares: AdamW over parameter `groups`, warm-up and cosine
    schedule, clipping, EMA, a per-epoch checkpoint (resumed when it matches `key`). `step_losses(epoch,
    generator)` yields one dict of losses per step; its "loss" is minimised before the next.
    Data-parallel (`world`, engine.distributed): each process's losses are its share of the
    step's, their gradients and losses are summed over the processes, and the first one alone
    shows progress and writes the checkpoint. Returns (EMA model, a log row per epoch)."""
    optimizer = torch.optim.AdamW(groups, fused=True)  # one kernel per step, not one per tensor
    epochs = cfg.warmup_epochs + cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_epochs * per_epoch, epochs * per_epoch))
    ema = EMA(net, cfg.ema)
    rows = resume(checkpoint, key, device, net, ema, optimizer, scheduler) if checkpoint else []
    bar = progress(total=epochs * per_epoch, initial=len(rows) * per_epoch, desc=desc, unit="step",
                   disable=not world.main)
    for epoch in range(len(rows), epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        net.train()
        sums, started = defaultdict(float), time.perf_counter()
        for losses in step_losses(epoch, generator):
            optimizer.zero_grad(set_to_none=True)
            if losses["loss"].requires_grad:  # not where a process had no window in this step
                losses["loss"].backward()
            world.sum_gradients(net.parameters())
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            optimizer.step()
            scheduler.step()
            ema.update(net)
            values = dict(zip(losses, world.total(torch.stack([v.detach().float() for v in losses.values()])).tolist()))
            for name, value in values.items():
                sums[name] += value / per_epoch
            bar.update()
            bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
        rows.append({"epoch": epoch + 1, **sums, "lr": scheduler.get_last_lr()[0],
                     "seconds": time.perf_counter() - started, "peak_memory_mb": peak_memory_mb(device)})
        if checkpoint and world.main:
            with atomic_path(checkpoint) as tmp:
                torch.save({"fingerprint": key, "model": net.state_dict(), "ema": ema.model.state_dict(),
                            "ema_updates": ema.updates, "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "log": rows}, tmp)
    bar.close()
    return ema.model, rows


def summarise(method, cfg, rows, videos, net, device):
    """train.json: what was trained, on how much, at what cost."""
    table = pd.DataFrame(rows)
    return {"method": method, "seed": cfg.seed, "epochs": len(rows), "videos": videos,
            "trainable_parameters": trainable_parameters(net),
            "peak_memory_mb": round(float(table["peak_memory_mb"].max()), 1),
            "train_seconds": round(float(table["seconds"].sum()), 2), "device": str(device),
            "final_loss": round(float(table["loss"].iloc[-1]), 6)}


def write_log(out_log, out_summary, rows, summary):
    write_text(out_log, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
    write_json(out_summary, summary)
