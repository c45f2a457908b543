"""LoFi stage A: the backbone and a head trained together, end to end, at low fidelity.

Full fidelity is every snippet of a video at the backbone's side (docs/design.md#lofi). A step
never sees it, only one of:

    S   every snippet, frames at half side
    T   every 4th snippet, full side
    ST  every 2nd snippet, side / sqrt 2

each about a quarter of the voxels (sides are rounded to whole patches, at least one; a
mode that would then be full fidelity is refused).
`cyclic` trains S, T, ST in turn, one an epoch; `short-cyclic` switches every `switch_every`
steps. The top `trainable_blocks` blocks (and the final norm) train, or the whole backbone; the blocks below
run under no_grad. A trainable block keeps only its input and is recomputed in backward
(activation checkpointing). The memory budget fixes the snippets a step holds: one snippet's
activation bytes at each fidelity are measured before training (saved-tensor hooks on one
clip), and a budget that cannot hold the head's shortest input is refused then, not found
as an out-of-memory error hours later.

Stage B is not here: the tuned backbone (EMA weights) is written as a checkpoint in the
official key layout with its JSON (identity: its SHA-256), the cache stage rebuilds the cache
with it at full fidelity, and a fresh head trains on that cache as head_only does. The stage-A
head is discarded.
"""

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbones import videomae
from ..engine import distributed, loop
from ..engine.device import fixed_bytes, make_deterministic, saved_bytes
from ..io import InputError, atomic_path, read_annotations, read_json, write_json
from ..settings import CYCLE, MODES, LofiConfig, TrainConfig, full_settings, head_config
from ..stages import backbone, decode
from ..store import windows
from ..store.snippets import snippet_count
from . import Method
from .detector import Detector
from .head_only import LastLayer

log = logging.getLogger(__name__)

STATISTICS_VIDEOS = 8  # the head's input standardisation, from the untuned backbone


def mode_at(cfg, epoch, step):
    """The fidelity of a step: fixed, one per epoch (cyclic) or one per `switch_every` steps."""
    if cfg.fidelity in MODES:
        return cfg.fidelity
    turn = epoch if cfg.fidelity == "cyclic" else step // cfg.switch_every
    return CYCLE[turn % len(CYCLE)]


def side_of(mode, pixels, patch):
    """Frame side of a fidelity: the full side scaled, rounded to whole patches, at least one."""
    return max(patch, round(pixels * MODES[mode][1] / patch) * patch)


@dataclass
class DecodedVideo:
    """A decoded video and its ground truth, in steps of its full-fidelity snippets."""

    name: str
    path: Path
    frames: int
    length: int  # snippets
    segments: torch.Tensor  # (G, 2) float
    labels: torch.Tensor  # (G,) int64

    def view(self, every, phase):
        """Every `every`-th snippet from `phase`: (snippets, segments in the view's steps)."""
        snippets = torch.arange(phase, self.length, every)
        return snippets, (self.segments - phase) / every


def load_videos(index, annotations, subset, cfg):
    """The decoded videos of `subset` (index: the decode stage's videos.json) and the classes."""
    decoded, dataset = read_json(index), read_annotations(annotations)
    classes = dataset["classes"]
    entries = {v: e for v, e in dataset["database"].items() if e["subset"] == subset}
    absent = sorted(set(entries) - set(decoded))
    if absent:
        raise InputError(f"{index}: lists no decoded video for {len(absent)} {subset} video(s) of {annotations}, "
                         f"e.g. {', '.join(absent[:5])}; rerun the decode stage")
    if not entries:
        raise InputError(f"{annotations}: no {subset} video to work on")
    folder, videos = Path(index).with_suffix(""), []
    for name in sorted(entries):
        info = decoded[name]
        attrs = {"fps": info["fps"], "snippet_frames": cfg.snippet_frames, "stride": cfg.stride}
        videos.append(DecodedVideo(name, folder / info["file"], info["frames"],
                            snippet_count(info["frames"], cfg.snippet_frames, cfg.stride),
                            *windows.ground_truth(entries[name]["annotations"], classes, attrs)))
    return videos, classes


class FrameReader:
    """Frames of decoded videos at side x side. A video is read whole and kept while every kept
    video fits in `memory_mb`; past that, each step reads only its window (a seek)."""

    def __init__(self, side, memory_mb):
        self.side, self.room, self.kept = side, memory_mb * 2**20, {}

    def read(self, video, first, stop):
        """uint8 (stop - first, side, side, 3): frames [first, stop), the last one repeated past the end."""
        if video.name not in self.kept and video.frames * self.side**2 * 3 <= self.room:
            self.kept[video.name] = np.stack(list(decode.iter_frames(video.path, self.side)))
            self.room -= self.kept[video.name].nbytes
        if video.name in self.kept:
            frames = self.kept[video.name][first:stop]
        else:
            frames = np.stack(list(itertools.islice(decode.iter_frames(video.path, self.side, first), stop - first)))
        if not len(frames):
            raise InputError(f"{video.path}: no frame {first} (the decode index says {video.frames} frames)")
        return np.concatenate([frames, frames[-1:].repeat(stop - first - len(frames), 0)])


def clips_of(reader, video, snippets, cfg, side):
    """The clips of the given snippets, (n, frames, side, side, 3), float 0-255 (resized to
    `side` from the reader's, antialiased) or uint8 (at the reader's side)."""
    starts = snippets * cfg.stride
    first, stop = int(starts[0]), int(starts[-1]) + cfg.snippet_frames
    frames = torch.from_numpy(reader.read(video, first, stop))
    clips = frames[(starts - first)[:, None] + torch.arange(cfg.snippet_frames)]
    if side == reader.side:
        return clips
    n, length = clips.shape[:2]
    small = F.interpolate(clips.flatten(0, 1).permute(0, 3, 1, 2).float(), size=(side, side), mode="bilinear",
                          antialias=True, align_corners=False)
    return small.permute(0, 2, 3, 1).reshape(n, length, side, side, 3)


class EndToEnd(nn.Module):
    """The backbone's pooled last block feeding a head_only detector, with gradients through
    the top `trainable_blocks` blocks (None: all of it)."""

    def __init__(self, vit, detector, trainable_blocks=None, checkpointing=True):
        super().__init__()
        depth = len(vit.blocks)
        if trainable_blocks is not None and trainable_blocks > depth:
            raise InputError(f"lofi: trainable_blocks {trainable_blocks} exceeds the backbone's {depth} blocks")
        self.backbone, self.detector, self.checkpointing = vit, detector, checkpointing
        self.first_trainable = 0 if trainable_blocks is None else depth - trainable_blocks
        vit.requires_grad_(trainable_blocks is None)
        for part in [*vit.blocks[self.first_trainable:], vit.norm, vit.fc_norm]:
            if part is not None:
                part.requires_grad_(True)

    def trainable_blocks(self):
        return self.backbone.blocks[self.first_trainable:]

    def features(self, clips):
        """(n, frames, side, side, 3) clips -> (n, width): the last block's tokens pooled."""
        vit = self.backbone
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.first_trainable == 0):
            x, (t, h, w) = vit.embed(clips)
        with torch.no_grad():
            for block in vit.blocks[:self.first_trainable]:
                x = block(x)
        for block in self.trainable_blocks():
            x = checkpoint(block, x, use_reentrant=False) if self.checkpointing and self.training else block(x)
        tokens = x.view(len(clips), t, h * w, -1)
        return vit.pool(tokens if vit.norm is None else vit.norm(tokens), len(vit.blocks))

    def forward(self, clips, multiple):
        """Detector outputs for a batch of clip tensors (one per video window) and the mask."""
        features = self.features(torch.cat(clips)).split([len(c) for c in clips])
        pooled, mask = windows.padded([x[None] for x in features], multiple)
        return self.detector({"pooled": pooled, "temporal": None, "mask": mask}), mask


def snippet_bytes(net, side, cfg, autocast, device):
    """Activation bytes one snippet adds to a step at this frame side: the clip, each trainable
    block's kept input (checkpointing) or all its activations, the one block being recomputed,
    the embedding when it trains, and the head's share."""
    vit, frames = net.backbone, cfg.snippet_frames
    clip = torch.zeros(1, frames, side, side, 3, device=device)
    with torch.enable_grad(), autocast:
        tokens, _ = vit.embed(clip)
        embed = saved_bytes(lambda: vit.embed(clip), vit) if net.first_trainable == 0 else 0
        x = tokens.detach().requires_grad_()
        block = net.trainable_blocks()[0]
        out = block(x)
        one_block = saved_bytes(lambda: block(x), block)
        blocks = len(net.trainable_blocks())
        kept = blocks * out.nbytes + one_block if net.checkpointing else blocks * one_block
        probe = 8 * net.detector.head.max_stride
        pooled = torch.randn(1, 1, probe, tokens.shape[-1], device=device)
        batch = {"pooled": pooled, "temporal": None, "mask": torch.ones(1, probe, dtype=torch.bool, device=device)}
        target = [(torch.tensor([[1.0, probe / 2]], device=device), torch.tensor([0], device=device))]
        head = saved_bytes(lambda: net.detector.head.loss(net.detector(batch), target, update_norm=False),
                           net.detector) / probe
    return clip.numel() * (1 + 4) + embed + kept + head  # the uint8 clip and its float copy


def plan_steps(net, modes, pixels, cfg, train_cfg, autocast, device):
    """{mode: (side, snippets a video gets in one step, bytes a snippet)} within the budget; an
    InputError for a mode that would be full fidelity or cannot hold the head's shortest input."""
    fixed, budget = fixed_bytes(net), cfg.budget_mb * 2**20
    shortest, plan = net.detector.head.max_stride, {}
    patch = net.backbone.preset.patch
    for mode in modes:
        side, every = side_of(mode, patch=patch, pixels=pixels), MODES[mode][0]
        if side == pixels and every == 1:
            raise InputError(f"lofi: fidelity {mode} would be full fidelity here: frames of {pixels} px are "
                             f"{pixels // patch} patch(es) of {patch} px a side, too few to scale by "
                             f"{MODES[mode][1]:.2f}; use fidelity T or ST, or a backbone with more pixels")
        per = snippet_bytes(net, side, cfg, autocast, device)
        window = min(train_cfg.max_length, int((budget - fixed) // (per * train_cfg.batch)))
        log.info("lofi %s: %d px, every %d snippet(s), %.2f MB a snippet, %d snippets a video per step, "
                 "%.0f MB fixed", mode, side, every, per / 2**20, window, fixed / 2**20)
        if window < shortest:
            need = (fixed + per * train_cfg.batch * shortest) / 2**20
            raise InputError(
                f"lofi: a step at fidelity {mode} ({side} px, every {every} snippet(s)) needs {need:.0f} MB: "
                f"{train_cfg.batch} video(s) x {shortest} snippets x {per / 2**20:.2f} MB, plus {fixed / 2**20:.0f} MB "
                f"of weights, gradients and optimiser state; the budget is {cfg.budget_mb:g} MB. Raise "
                f"lofi.budget_mb, or train fewer blocks (lofi.trainable_blocks) or fewer videos a step (train.batch)")
        plan[mode] = (side, window, per)
    return plan


def save_backbone(path, vit, about):
    """The backbone's weights in the official key layout ({"model": state}), and `about` it.
    Written through a file object: torch.save names the archive inside after a path it is
    given, which would be the temporary one, and the same weights would hash differently."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"model": {k: v.cpu() for k, v in vit.state_dict().items()}, "actloc_lofi": about}, f)


def modes_of(cfg):
    return [cfg.fidelity] if cfg.fidelity in MODES else list(CYCLE)


def train_stage_a(index, annotations, subset, settings, base, name, out_model, out_backbone, out_log, out_summary,
                  checkpoint_path=None, device="auto"):
    """`actloc train` with method lofi. index: the decode stage's videos.json; base: the JSON of
    `actloc backbone` for the backbone to tune. Writes the tuned backbone (out_model, .pth) and
    its JSON (out_backbone, named `name`), the log and the summary; returns the summary (None
    in a data-parallel process other than the first: under torchrun or srun, the processes
    train data-parallel, engine.distributed)."""
    settings = full_settings(settings)
    train_cfg = TrainConfig(**settings["train"])
    with distributed.joined(device, train_cfg.batch) as (world, device):
        return stage_a_on(world, device, train_cfg, settings, index, annotations, subset, base, name, out_model,
                          out_backbone, out_log, out_summary, checkpoint_path)


def stage_a_on(world, device, train_cfg, settings, index, annotations, subset, base, name, out_model, out_backbone,
               out_log, out_summary, checkpoint_path):
    """`train_stage_a`, as one of the processes of `world` on `device`."""
    cfg = LofiConfig(**settings["lofi"])
    base = backbone.read_description(base)
    make_deterministic(train_cfg.seed)
    videos, classes = load_videos(index, annotations, subset, cfg)
    vit, _ = videomae.load(base["preset"], base["checkpoint"], base["seed"])
    detector = Detector("head_only", vit.preset.width, 1, len(classes), head_config(settings["head"]))
    net = EndToEnd(vit, detector, cfg.trainable_blocks, cfg.checkpointing).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=base["precision"] == "bf16")
    plan = plan_steps(net, modes_of(cfg), base["pixels"], cfg, train_cfg, autocast, device)
    reader = FrameReader(base["pixels"], cfg.frame_memory_mb)
    per_epoch = math.ceil(len(videos) / train_cfg.batch)

    def batch_of(chosen, mode, generator, world=distributed.World()):
        """Each video's clips at `mode` for a random window, and its targets in the window's steps:
        of `world`'s share of the videos, though every process draws every window (so that their
        generators stay alike)."""
        every, (side, window, _) = MODES[mode][0], plan[mode]
        drawn = []
        for video in chosen:
            phase = int(torch.randint(min(every, video.length), (1,), generator=generator))
            snippets, segments = video.view(every, phase)
            drawn.append((video, snippets, segments,
                          windows.training_window(len(snippets), segments, window, generator, train_cfg.keep_fraction)))
        clips, targets = [], []
        for video, snippets, segments, (start, stop) in world.share(drawn):
            clips.append(clips_of(reader, video, snippets[start:stop], cfg, side).to(device))
            targets.append(tuple(x.to(device) for x in windows.window_targets(segments, video.labels, start, stop)))
        return clips, targets

    with torch.no_grad(), autocast:
        generator = torch.Generator().manual_seed(train_cfg.seed)
        first = modes_of(cfg)[0]
        net.detector.fit_standardisation(
            {"pooled": net.features(clips)[None].float().cpu()}
            for clips in batch_of(videos[:STATISTICS_VIDEOS], first, generator)[0])

    def step_losses(epoch, generator):
        order = torch.randperm(len(videos), generator=generator).tolist()
        for step, first in enumerate(range(0, len(order), train_cfg.batch), start=epoch * per_epoch):
            mode = mode_at(cfg, epoch, step)
            clips, targets = batch_of([videos[i] for i in order[first:first + train_cfg.batch]], mode, generator,
                                      world)
            if not clips:
                yield net.detector.head.no_loss(world.total)
                continue
            with autocast:  # left before yielding: backward and the optimiser step run outside it
                outputs, _ = net(clips, net.detector.head.max_stride)
                losses = net.detector.head.loss(outputs, targets, total=world.total)
            yield losses

    groups = (loop.parameter_groups(net.backbone, train_cfg.weight_decay, train_cfg.lr * cfg.backbone_lr)
              + loop.parameter_groups(net.detector, train_cfg.weight_decay, train_cfg.lr))
    key = loop.fingerprint({"settings": settings, "base": base["identity"]}, index, annotations)
    tuned, rows = loop.optimise(net, groups, train_cfg, per_epoch, step_losses, key, checkpoint_path, device,
                                 f"lofi stage A ({cfg.fidelity})", world)
    if not world.main:
        return None
    save_backbone(out_model, tuned.backbone, {"settings": settings, "base": base["identity"]})
    tuned_settings = backbone.describe(name, base["preset"], out_model, base["seed"], base["pixels"],
                                       base["layers"], base["temporal"], base["precision"])
    write_json(out_backbone, tuned_settings)
    summary = loop.summarise("lofi", train_cfg, rows, len(videos), net, device) | {"processes": world.size}
    summary.update(fidelity=cfg.fidelity, base=base["identity"], identity=tuned_settings["identity"],
                   steps={mode: {"side": side, "snippets_per_video": window, "snippet_mb": round(per / 2**20, 3)}
                          for mode, (side, window, per) in plan.items()})
    loop.write_log(out_log, out_summary, rows, summary)
    if checkpoint_path:
        Path(checkpoint_path).unlink(missing_ok=True)
    return summary


# Stage B trains a head on the tuned backbone's cache as head_only does (actloc.config).
METHOD = Method("lofi", layers="last", temporal=False, settings=LofiConfig, train=train_stage_a,
                features=lambda channels, n_layers, settings: LastLayer(channels))
