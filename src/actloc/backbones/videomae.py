"""The VideoMAE / VideoMAEv2 family (actloc.backbones): a ViT in their layout, in plain PyTorch.

A 16-frame clip becomes tubelet tokens (Conv3d, 2 frames x p x p pixels each) plus a fixed
sinusoidal position table; pre-norm blocks attend jointly over space and time. Parameter names
and shapes are those of the official checkpoints (docs/usage.md#backbones-and-checkpoints), so their `.pth` files
load as distributed. `forward` returns the tokens of the requested (tapped) blocks only and
runs no block deeper than the deepest one asked for.
"""

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..io import InputError
from . import parts
from .parts import Encoder, Mlp, PatchEmbed, assigned, check_divides, frozen, interpolated, normalized, read_state

log = logging.getLogger(__name__)

# The sizes of the published models (tiny is for the demo and the tests), as literals: the
# Snakefile reads them without importing this module (actloc.backbones.presets).
PRESETS = {
    "tiny": {"width": 192, "depth": 4, "heads": 3, "mlp": 768, "patch": 16, "tubelet": 2, "frames": 16, "pixels": 112},
    "small": {"width": 384, "depth": 12, "heads": 6, "mlp": 1536, "patch": 16, "tubelet": 2, "frames": 16, "pixels": 224},
    "base": {"width": 768, "depth": 12, "heads": 12, "mlp": 3072, "patch": 16, "tubelet": 2, "frames": 16, "pixels": 224},
    "large": {"width": 1024, "depth": 24, "heads": 16, "mlp": 4096, "patch": 16, "tubelet": 2, "frames": 16,
              "pixels": 224},
    "huge": {"width": 1280, "depth": 32, "heads": 16, "mlp": 5120, "patch": 16, "tubelet": 2, "frames": 16,
             "pixels": 224},
    "giant": {"width": 1408, "depth": 40, "heads": 16, "mlp": 6144, "patch": 14, "tubelet": 2, "frames": 16,
              "pixels": 224},
}
FINAL_NORMS = ("fc_norm", "norm", "none")


def sinusoid_table(positions, width):
    """The fixed position table of the official code: sin on even channels, cos on odd ones."""
    position = torch.arange(positions, dtype=torch.float64)[:, None]
    # float64 throughout, as the official code: an exponent rounded to float32 moves the table by 3e-5
    exponent = 2 * (torch.arange(width, dtype=torch.float64) // 2) / width
    angle = position / torch.pow(10000.0, exponent)
    angle[:, 0::2] = angle[:, 0::2].sin()
    angle[:, 1::2] = angle[:, 1::2].cos()
    return angle.float()[None]


class Attention(nn.Module):
    """Joint space-time self-attention; the key has no bias, as in the official models."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        batch, tokens, width = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    """Pre-norm transformer block; `layer_scale` adds the per-channel gammas some checkpoints hold."""

    def __init__(self, width, heads, hidden, layer_scale=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, hidden)
        if layer_scale:
            self.gamma_1 = nn.Parameter(torch.ones(width))
            self.gamma_2 = nn.Parameter(torch.ones(width))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x):
        if self.gamma_1 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class Backbone(Encoder):
    """VideoMAE-layout ViT. `final_norm`: `fc_norm` (applied after mean pooling, fine-tuned
    models), `norm` (applied to the last block's tokens, pre-training encoders) or `none`.
    `first_block` > 0 leaves out the blocks below it (placeholders without weights): a model
    that only runs on tokens leaving block `first_block` (`run_blocks`), as partial does."""

    def __init__(self, preset, final_norm="fc_norm", layer_scale=False, first_block=0):
        super().__init__()
        if final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}, not {final_norm!r}")
        self.preset, self.first_block = preset, first_block
        self.patch_embed = PatchEmbed(preset.width, preset.patch, preset.tubelet)
        self.blocks = nn.ModuleList(
            Block(preset.width, preset.heads, preset.mlp, layer_scale) if index >= first_block else nn.Identity()
            for index in range(preset.depth))
        self.norm = nn.LayerNorm(preset.width, eps=1e-6) if final_norm == "norm" else None
        self.fc_norm = nn.LayerNorm(preset.width, eps=1e-6) if final_norm == "fc_norm" else None
        self.native_grid = (preset.frames // preset.tubelet, preset.pixels // preset.patch, preset.pixels // preset.patch)
        self.set_constants()

    @property
    def stem(self):
        """The modules before the blocks (the position table is a constant, not trained)."""
        return [self.patch_embed]

    @property
    def architecture(self):
        """What the checkpoint's keys said beyond the preset: the final norm and layer scale."""
        final_norm = "fc_norm" if self.fc_norm is not None else "norm" if self.norm is not None else "none"
        return {"final_norm": final_norm, "layer_scale": self.blocks[-1].gamma_1 is not None}

    def set_constants(self, device=None):
        """(Re)make the tensors that are no checkpoint's business: the sinusoidal position table
        (official files store none unless it was learnt, as `pos_embed`) and the pixel statistics."""
        table = sinusoid_table(math.prod(self.native_grid), self.preset.width)
        self.register_buffer("pos_embed", table.to(device), persistent=False)
        self.set_pixel_statistics(device)

    def position_table(self, grid):
        """The table for a (t, h, w) token grid: trilinear interpolation of the native one."""
        return interpolated(self.pos_embed, self.native_grid, grid)

    def embed(self, clips):
        """uint8 RGB clips (B, frames, H, W, 3) -> tokens (B, t*h*w, width) and the grid (t, h, w)."""
        check_divides(clips, self.preset)
        x = self.patch_embed(normalized(clips, self.pixel_mean, self.pixel_std))
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2) + self.position_table(grid), grid

    def tap(self, index, x, grid):
        """The tokens x leaving block `index` as (B, t, h*w, width); the last block's get `norm`
        when the model has one (`fc_norm` acts after pooling, see `pool`)."""
        out = self.norm(x) if index == len(self.blocks) and self.norm is not None else x
        return out.view(x.shape[0], grid[0], grid[1] * grid[2], -1)

    def pool(self, tokens, layer, temporal=False):
        """Mean over space and time (B, width), or over space only (B, t, width) if `temporal`."""
        pooled = tokens.mean(2) if temporal else tokens.mean((1, 2))
        if layer == len(self.blocks) and self.fc_norm is not None:
            pooled = self.fc_norm(pooled)
        return pooled


def preset_of(name):
    return parts.preset_of(PRESETS, name, "videomae")


def upper_blocks(preset_name, architecture, first_block):
    """The blocks from `first_block` on (those below are placeholders without weights), built as
    `architecture` (Backbone.architecture) says."""
    return Backbone(preset_of(preset_name), architecture["final_norm"], architecture["layer_scale"], first_block)


def random_backbone(preset_name, seed):
    """A seed-fixed random initialisation (VideoMAE's: truncated normal 0.02 for linear layers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Backbone(preset_of(preset_name))
        parts.initialise_linears(model)
    return model


# The parts of the published files that are not the encoder.
IGNORED_PREFIXES = ("head.", "decoder.", "encoder_to_decoder.", "mask_token", "decoder_pos_embed")


def read_checkpoint(path):
    """The encoder weights of an official checkpoint and the names of what was left out."""
    state = read_state(path)
    ignored = []
    if any(k.startswith("encoder.") for k in state):  # a pre-training checkpoint
        ignored = [k for k in state if not k.startswith("encoder.")]
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    ignored += [k for k in state if k.startswith(IGNORED_PREFIXES)]
    return {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}, sorted(ignored)


def architecture_of(state):
    """final_norm and layer_scale as the checkpoint's keys show them."""
    final_norm = "fc_norm" if "fc_norm.weight" in state else "norm" if "norm.weight" in state else "none"
    return final_norm, "blocks.0.gamma_1" in state


def load(preset_name, checkpoint=None, seed=0):
    """The frozen backbone (eval mode, no gradients) and a report of what loading found."""
    preset = preset_of(preset_name)
    if checkpoint is None:
        model = random_backbone(preset_name, seed)
        report = {"checkpoint": None, "seed": seed}
        log.warning("backbone %s: random weights (seed %d), no checkpoint given", preset_name, seed)
    else:
        state, ignored = read_checkpoint(checkpoint)
        final_norm, layer_scale = architecture_of(state)
        with torch.device("meta"):  # no random initialisation of weights about to be replaced
            model = Backbone(preset, final_norm, layer_scale)
        unexpected = assigned(model, state, checkpoint, preset_name, own=["pos_embed"])
        model.set_constants(device="cpu")
        if "pos_embed" in state:  # a learnt table replaces the sinusoid
            if state["pos_embed"].shape != model.pos_embed.shape:
                raise InputError(f"{checkpoint}: pos_embed has shape {list(state['pos_embed'].shape)}, "
                                 f"preset {preset_name!r} expects {list(model.pos_embed.shape)}")
            model.pos_embed.copy_(state["pos_embed"])
        report = {"checkpoint": str(checkpoint),
                  "size_bytes": Path(checkpoint).stat().st_size, "final_norm": final_norm,
                  "layer_scale": layer_scale, "learnt_positions": "pos_embed" in state,
                  "ignored": ignored, "unexpected": unexpected}
        log.info("%s: loaded as %s (%s), %d weight(s) of head/decoder ignored",
                 checkpoint, preset_name, final_norm, len(ignored))
    report["preset"] = preset_name
    return frozen(model, report)


