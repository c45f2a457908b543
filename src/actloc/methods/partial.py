"""partial: the backbone's upper blocks tuned from cached tokens (docs/design.md#partial).

The cache holds, besides the tapped layers, the tokens leaving block k (`block_tokens`:
(T, t, g*g, C), averaged over space to a g x g grid a tubelet step). Blocks k+1..N (and the
final norm) are loaded from the backbone's checkpoint and run on them, each followed by an
adapter: a residual bottleneck with a depthwise convolution over the tubelet steps, its
up-projection zero, so that untrained it passes the block's output through. The taps above k
are recomputed so, pooled as the cache pools them, and replace the cached ones; LoSA and the
head then run as for `losa`. Gradients reach the adapters, the top `tune_blocks` blocks when
asked, LoSA and the head, and nothing at or below block k: no frame is decoded and no lower
block runs, in training or inference.

Identities (tests/test_partial.py): untrained, the recomputed taps are the frozen blocks run
on the cached tokens; at the full grid (g = pixels / patch) they are the cached taps
themselves, to float16 precision, and the method starts as `losa` on the same cache.

Each upper block keeps only its input for backward and is recomputed (activation
checkpointing); the memory budget fixes the snippets a video gets in one step, measured on
one snippet before training, and a budget that cannot hold the head's shortest input is
refused then.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import backbones
from ..engine.device import fixed_bytes, saved_bytes
from ..io import InputError
from ..settings import LosaConfig, PartialConfig
from . import Method
from .losa import LoSA

log = logging.getLogger(__name__)

INFERENCE_SNIPPETS = 256  # snippets the upper blocks take at once without gradients


class StepAdapter(nn.Module):
    """x + up(GELU(depthwise conv over tubelet steps (down(x)))), up zero at the start."""

    def __init__(self, width, bottleneck, kernel):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.conv = nn.Conv1d(bottleneck, bottleneck, kernel, padding=kernel // 2, groups=bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x, steps):
        """x: (N, steps * places, width), tokens step-major as the backbone orders them."""
        n, count, _ = x.shape
        h = self.down(x).view(n, steps, count // steps, -1).permute(0, 2, 3, 1).flatten(0, 1)  # (N*places, b, t)
        h = F.gelu(self.conv(h)).view(n, count // steps, -1, steps).permute(0, 3, 1, 2).flatten(1, 2)
        return x + self.up(h)


class Partial(nn.Module):
    def __init__(self, channels, n_layers, config, store):
        super().__init__()
        tokens = store.get("block_tokens")
        if not tokens:
            raise InputError(f"partial: the cache of backbone {store['backbone']!r} holds no block tokens; set "
                             "tokens in its backbones entry (config.yaml) and rebuild the cache")
        family = store.get("family", backbones.DEFAULT_FAMILY)
        preset = backbones.preset(family, store["preset"])
        self.block, self.grid = tokens["block"], tokens["grid"]
        if config.tune_blocks > preset.depth - self.block:
            raise InputError(f"partial: tune_blocks {config.tune_blocks} exceeds the {preset.depth - self.block} "
                             f"blocks above block {self.block}")
        self.steps = store["snippet_frames"] // preset.tubelet
        self.upper = [layer for layer in store["layers"] if layer > self.block]
        if not self.upper:
            raise InputError(f"partial: no tapped layer of {store['layers']} lies above block {self.block}, whose "
                             "tokens are cached: tap a higher one or cache a lower block")
        self.rows = [store["layers"].index(layer) for layer in self.upper]
        # LoSA first: from one seed it is losa's, so that untrained this method starts as losa.
        self.losa = LoSA(channels, n_layers, LosaConfig(**config.losa))
        # The blocks above k, built as the token cache recorded (its architecture's keys).
        self.vit = backbones.get(family).upper_blocks(store["preset"], tokens, self.block)
        self.vit.requires_grad_(False)
        tuned = self.vit.blocks[preset.depth - config.tune_blocks:] if config.tune_blocks else []
        for part in [*tuned, *(backbones.after_blocks(self.vit) if tuned else ())]:
            part.requires_grad_(True)
        width = preset.width
        self.adapters = nn.ModuleList(StepAdapter(width, max(1, width // config.adapter_reduction), config.kernel)
                                      for _ in range(self.block, preset.depth))
        self.checkpointing, self.budget_mb = config.checkpointing, config.budget_mb

    def load_backbone(self, description, store):
        """The upper blocks' weights from the backbone `description` (the JSON of `actloc
        backbone`), which must be the one that built the cache."""
        if description["identity"] != store["identity"]:
            raise InputError(f"partial: backbone {description['name']!r} ({description['identity']}) did not "
                             f"build this cache ({store['identity']}); give the JSON of the one that did")
        full, _ = backbones.load(description)
        own = self.vit.state_dict()
        self.vit.load_state_dict({name: value for name, value in full.state_dict().items() if name in own})

    def run(self, index, block, x):
        """Block `index` (1-based) and its adapter, checkpointed when training."""
        def step(x):
            return self.adapters[index - self.block - 1](block(x), self.steps)
        return checkpoint(step, x, use_reentrant=False) if self.checkpointing and torch.is_grad_enabled() else step(x)

    def taps_of(self, tokens):
        """Block tokens (N, t, g*g, C) of N snippets -> the upper taps, pooled (L, N, C) and
        per tubelet step (L, N, t, C), as the cache stage pools the backbone's."""
        x = tokens.flatten(1, 2)
        taps = self.vit.run_blocks(x, (self.steps, self.grid, self.grid), self.block, self.upper, self.run)
        return (torch.stack([self.vit.pool(tap, layer) for tap, layer in zip(taps, self.upper)]),
                torch.stack([self.vit.pool(tap, layer, temporal=True) for tap, layer in zip(taps, self.upper)]))

    def upper_taps(self, pooled, temporal, block_tokens, mask):
        """The batch's pooled (B, L, T, C) and temporal (B, L, T, t, C) taps with those above
        block k recomputed from block_tokens (B, 1, T, t, g*g, C) for the real snippets (mask)."""
        tokens = block_tokens[:, 0][mask]  # (N, t, g*g, C): padding never runs
        parts = [self.taps_of(tokens)] if torch.is_grad_enabled() else [
            self.taps_of(chunk) for chunk in tokens.split(INFERENCE_SNIPPETS)]
        new_pooled, new_temporal = (torch.cat(part, dim=1) for part in zip(*parts))
        pooled, temporal = pooled.clone(), temporal.clone()
        for row, values, steps in zip(self.rows, new_pooled, new_temporal):
            pooled[:, row][mask] = values.to(pooled.dtype)  # through a view: writes into the clone
            temporal[:, row][mask] = steps.to(temporal.dtype)
        return pooled, temporal

    def forward(self, pooled, temporal, mask):
        return self.losa(pooled, temporal, mask)

    def snippets_per_step(self, net, cfg, device):
        """Snippets a video gets in one training step of `net` (the Detector holding this)
        within the budget: weights and optimiser state, and `cfg.batch` videos' activations, a
        snippet's measured on a window of the head's shortest input; an InputError when that
        input does not fit."""
        probe, layers, width = net.head.max_stride, len(self.losa.short), self.losa.norm.normalized_shape[0]
        batch = {"pooled": torch.zeros(1, layers, probe, width, device=device),
                 "temporal": torch.zeros(1, layers, probe, self.steps, width, device=device),
                 "block_tokens": torch.zeros(1, 1, probe, self.steps, self.grid**2, self.vit.preset.width,
                                             device=device),
                 "mask": torch.ones(1, probe, dtype=torch.bool, device=device)}
        target = [(torch.tensor([[1.0, probe / 2]], device=device), torch.tensor([0], device=device))]
        with torch.enable_grad():
            kept = saved_bytes(lambda: net.head.loss(net(batch), target, update_norm=False), net)
        inputs = sum(batch[name].numel() * 2 for name in ("pooled", "temporal", "block_tokens"))  # float16 reads
        per, fixed, budget = (kept + inputs) / probe, fixed_bytes(net), self.budget_mb * 2**20
        window = min(cfg.max_length, int((budget - fixed) // (per * cfg.batch)))
        log.info("partial: blocks %d..%d on %d x %d tokens a tubelet step, %.3f MB a snippet, %d snippets a "
                 "video per step, %.0f MB fixed", self.block + 1, self.vit.preset.depth, self.grid, self.grid,
                 per / 2**20, window, fixed / 2**20)
        if window < probe:
            need = (fixed + per * cfg.batch * probe) / 2**20
            raise InputError(f"partial: a step needs {need:.0f} MB: {cfg.batch} video(s) x {probe} snippets x "
                             f"{per / 2**20:.3f} MB, plus {fixed / 2**20:.0f} MB of weights, gradients and optimiser "
                             f"state; the budget is {self.budget_mb:g} MB. Raise partial.budget_mb, or tune fewer "
                             "blocks (partial.tune_blocks), or fewer videos a step (train.batch)")
        return window


METHOD = Method("partial", layers="all", temporal=True, settings=PartialConfig, tokens=True,
                features=lambda channels, n_layers, settings, store: Partial(channels, n_layers,
                                                                             settings or PartialConfig(), store))
