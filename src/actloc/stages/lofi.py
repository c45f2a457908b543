"""LoFi stage: LoFi's stage A, the backbone and a head trained end to end on the decoded videos at
low fidelity (actloc.methods.lofi: the model, its fidelities and its memory plan). Writes the
tuned backbone in the official key layout with its JSON, which the cache stage then caches.
"""

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import backbones
from ..engine import distributed, loop
from ..engine.device import make_deterministic
from ..io import InputError, atomic_path, read_annotations, read_json, write_json
from ..media import iter_frames
from ..methods import full_settings
from ..methods.detector import Detector
from ..methods.lofi import EndToEnd, mode_at, modes_of, plan_steps
from ..settings import MODES, LofiConfig, TrainConfig, head_config
from ..store import windows
from ..store.snippets import snippet_count
from . import backbone

log = logging.getLogger(__name__)


STATISTICS_VIDEOS = 8  # the head's input standardisation, from the untuned backbone


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
            self.kept[video.name] = np.stack(list(iter_frames(video.path, self.side)))
            self.room -= self.kept[video.name].nbytes
        if video.name in self.kept:
            frames = self.kept[video.name][first:stop]
        else:
            frames = np.stack(list(itertools.islice(iter_frames(video.path, self.side, first), stop - first)))
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


def save_backbone(path, vit, about):
    """The backbone's weights in the official key layout ({"model": state}), and `about` it.
    Written through a file object: torch.save names the archive inside after a path it is
    given, which would be the temporary one, and the same weights would hash differently."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"model": {k: v.cpu() for k, v in vit.state_dict().items()}, "actloc_lofi": about}, f)


def train(index, annotations, subset, settings, base, name, out_model, out_backbone, out_log, out_summary,
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
    """`train`, as one of the processes of `world` on `device`."""
    cfg = LofiConfig(**settings["lofi"])
    base = backbone.read_description(base)
    make_deterministic(train_cfg.seed)
    videos, classes = load_videos(index, annotations, subset, cfg)
    vit, _ = backbones.load(base)
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
                                       base["layers"], base["temporal"], base["precision"],
                                       family=base.get("family", backbones.DEFAULT_FAMILY))
    write_json(out_backbone, tuned_settings)
    summary = loop.summarise("lofi", train_cfg, rows, len(videos), net, device) | {"processes": world.size}
    summary.update(fidelity=cfg.fidelity, base=base["identity"], identity=tuned_settings["identity"],
                   steps={mode: {"side": side, "snippets_per_video": window, "snippet_mb": round(per / 2**20, 3)}
                          for mode, (side, window, per) in plan.items()})
    loop.write_log(out_log, out_summary, rows, summary)
    if checkpoint_path:
        Path(checkpoint_path).unlink(missing_ok=True)
    return summary
