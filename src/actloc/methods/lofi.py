"""LoFi: the backbone and a head trained together, end to end, at low fidelity (its stage A:
the training itself is the stage actloc.stages.lofi; this module is the model and its plan).

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

Stage B is not here either: the tuned backbone (EMA weights) is written as a checkpoint in the
official key layout with its JSON (identity: its SHA-256), the cache stage rebuilds the cache
with it at full fidelity, and a fresh head trains on that cache as head_only does. The stage-A
head is discarded.
"""

import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import backbones
from ..engine.device import fixed_bytes, saved_bytes
from ..io import InputError
from ..settings import CYCLE, MODES, LofiConfig
from ..store import windows
from . import Method
from .head_only import LastLayer

log = logging.getLogger(__name__)


def mode_at(cfg, epoch, step):
    """The fidelity of a step: fixed, one per epoch (cyclic) or one per `switch_every` steps."""
    if cfg.fidelity in MODES:
        return cfg.fidelity
    turn = epoch if cfg.fidelity == "cyclic" else step // cfg.switch_every
    return CYCLE[turn % len(CYCLE)]


def modes_of(cfg):
    """The fidelities a training visits: its one, or S, T and ST in turn."""
    return [cfg.fidelity] if cfg.fidelity in MODES else list(CYCLE)


def side_of(mode, pixels, patch):
    """Frame side of a fidelity: the full side scaled, rounded to whole patches, at least one."""
    return max(patch, round(pixels * MODES[mode][1] / patch) * patch)


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
        for part in [*vit.blocks[self.first_trainable:], *backbones.after_blocks(vit)]:
            part.requires_grad_(True)

    def trainable_blocks(self):
        return self.backbone.blocks[self.first_trainable:]

    def features(self, clips):
        """(n, frames, side, side, 3) clips -> (n, width): the last block's tokens pooled."""
        vit, depth = self.backbone, len(self.backbone.blocks)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.first_trainable == 0):
            x, grid = vit.embed(clips)
        (tokens,) = vit.run_blocks(x, grid, 0, [depth], self.run)
        return vit.pool(tokens, depth)

    def run(self, index, block, x):
        """Block `index` (1-based): without gradients below the trainable ones, checkpointed in them
        when training."""
        if index <= self.first_trainable:
            with torch.no_grad():
                return block(x)
        return checkpoint(block, x, use_reentrant=False) if self.checkpointing and self.training else block(x)

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


# Stage B trains a head on the tuned backbone's cache as head_only does (actloc.config).
METHOD = Method("lofi", layers="last", temporal=False, settings=LofiConfig, train="actloc.stages.lofi",
                features=lambda channels, n_layers, settings: LastLayer(channels))
