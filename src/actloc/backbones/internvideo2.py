"""The InternVideo2 family (actloc.backbones): its video encoder in plain PyTorch.

Every frame becomes patch tokens (Conv3d, tubelet 1, 14 x 14 px), behind a class token, plus a
learnt position table (a 3D sincos one at random initialisation); pre-RMSNorm blocks attend
jointly over space and time, with RMSNorm on queries and keys and layer scales. Parameter names
are those of the authors' checkpoints, which load as distributed: the classifiers fine-tuned on
Kinetics (single_modality), the stage-1 pre-training encoders and the stage-2 video-text models
(whose `vision_encoder.` is read). The attention-pooling projector, the decoders, the classifier
and everything of other modalities are left out: a snippet's vector is the mean of a tapped
block's patch tokens, as for VideoMAE.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..io import InputError
from . import parts
from .parts import Encoder, Mlp, PatchEmbed, assigned, check_divides, frozen, interpolated, normalized, read_state

log = logging.getLogger(__name__)

# The published sizes (tiny is a random-weight stand-in for the tests), as literals read by the
# Snakefile (actloc.backbones.presets). `frames`: the position table a random model gets; a
# checkpoint's own table sets its clip length (4, 8 or 16 frames as published).
PRESETS = {
    "tiny": {"width": 192, "depth": 4, "heads": 3, "mlp": 768, "patch": 14, "tubelet": 1, "frames": 8, "pixels": 112},
    "1B": {"width": 1408, "depth": 40, "heads": 16, "mlp": 6144, "patch": 14, "tubelet": 1, "frames": 8,
           "pixels": 224},
    "6B": {"width": 3200, "depth": 48, "heads": 25, "mlp": 12800, "patch": 14, "tubelet": 1, "frames": 8,
           "pixels": 224},
}

# Parts of the published files that are not the encoder's blocks (heads, decoders, other tables).
IGNORED_PREFIXES = ("clip_projector.", "fc_norm.", "head.", "clip_decoder.", "final_clip_decoder.", "mae_decoder.",
                    "clip_pos_embed", "clip_img_pos_embed", "img_pos_embed", "mae_pos_embed")
STAGE2_PREFIX = "vision_encoder."  # the video encoder inside a stage-2 video-text model
SEPARABLE_TABLE = ("pos_embed_cls", "pos_embed_temporal", "pos_embed_spatial")


class Attention(nn.Module):
    """Joint space-time self-attention with RMSNorm over all heads' queries and keys."""

    def __init__(self, width, heads, qkv_bias=False, qk_norm=True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.q_norm = nn.RMSNorm(width, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(width, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (part.view(batch, tokens, self.heads, -1).transpose(1, 2)
                   for part in (self.q_norm(q), self.k_norm(k), v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


class LayerScale(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    """Pre-RMSNorm transformer block with layer scales (ls1, ls2) where the checkpoint has them."""

    def __init__(self, width, heads, hidden, qkv_bias=False, qk_norm=True, layer_scale=True):
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=1e-6)
        self.attn = Attention(width, heads, qkv_bias, qk_norm)
        self.ls1 = LayerScale(width) if layer_scale else nn.Identity()
        self.norm2 = nn.RMSNorm(width, eps=1e-6)
        self.mlp = Mlp(width, hidden)
        self.ls2 = LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def sincos(positions, width):
    """(len(positions), width): sines of positions x frequencies 10000^(-i / (width/2)), then cosines."""
    frequencies = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float32) / (width / 2))
    angles = positions.float()[:, None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_table(grid, width):
    """The initial position table of a (t, h, w) grid, time-major: a quarter of the channels
    for time, then halves of the rest for the column and the row; a zero row for the class token."""
    t, h, w = grid
    steps, rows, columns = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    quarter = width // 4
    table = torch.cat([sincos(steps.flatten(), quarter), sincos(columns.flatten(), 3 * quarter // 2),
                       sincos(rows.flatten(), 3 * quarter // 2)], dim=1)
    return torch.cat([torch.zeros(1, width), table])[None]


class Backbone(Encoder):
    """InternVideo2's video encoder. `grid` (t, h, w): the grid its position table is for;
    `first_block` > 0 leaves out the blocks below it (placeholders without weights): a model
    that only runs on tokens leaving block `first_block` (`run_blocks`), as partial does."""

    def __init__(self, preset, grid=None, qkv_bias=False, qk_norm=True, layer_scale=True, first_block=0):
        super().__init__()
        if preset.width % 16:  # a quarter for time and 3/8 for each of rows and columns, in sine-cosine pairs
            raise ValueError(f"an InternVideo2 width must be a multiple of 16, not {preset.width}")
        self.preset, self.first_block = preset, first_block
        self.native_grid = tuple(grid or (preset.frames // preset.tubelet, preset.pixels // preset.patch,
                                          preset.pixels // preset.patch))
        self.patch_embed = PatchEmbed(preset.width, preset.patch, preset.tubelet)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, preset.width))
        self.pos_embed = nn.Parameter(sincos_table(self.native_grid, preset.width))
        self.blocks = nn.ModuleList(
            Block(preset.width, preset.heads, preset.mlp, qkv_bias, qk_norm, layer_scale) if index >= first_block
            else nn.Identity() for index in range(preset.depth))
        self.set_pixel_statistics()

    @property
    def stem(self):
        """The modules before the blocks (the class token and position table stay as loaded)."""
        return [self.patch_embed]

    @property
    def architecture(self):
        """What the checkpoint's keys said beyond the preset, which the blocks are built with."""
        attn = self.blocks[-1].attn
        return {"qkv_bias": attn.qkv.bias is not None, "qk_norm": isinstance(attn.q_norm, nn.RMSNorm),
                "layer_scale": isinstance(self.blocks[-1].ls1, LayerScale)}

    def embed(self, clips):
        """uint8 RGB clips (B, frames, H, W, 3) -> tokens (B, 1 + t*h*w, width), the class token
        first, and the grid (t, h, w); the position table interpolated for another grid."""
        check_divides(clips, self.preset)
        x = self.patch_embed(normalized(clips, self.pixel_mean, self.pixel_std))
        grid = tuple(x.shape[2:])
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        table = self.pos_embed
        if grid != self.native_grid:
            table = torch.cat([table[:, :1], interpolated(table[:, 1:], self.native_grid, grid)], dim=1)
        return x + table, grid

    def tap(self, index, x, grid):
        """The patch tokens (B, t, h*w, width) of the tokens x leaving block `index`: a (t, h, w)
        grid with the class token first (from `embed`) or without it (partial's cached grid)."""
        t, h, w = grid
        if x.shape[1] - t * h * w not in (0, 1):
            raise ValueError(f"{x.shape[1]} tokens are not a {t}x{h}x{w} grid, with or without a class token")
        return x[:, x.shape[1] - t * h * w:].reshape(x.shape[0], t, h * w, -1)

    def pool(self, tokens, layer, temporal=False):
        """Mean over space and time (B, width), or over space only (B, t, width) if `temporal`."""
        return tokens.mean(2) if temporal else tokens.mean((1, 2))


def preset_of(name):
    return parts.preset_of(PRESETS, name, "internvideo2")


def upper_blocks(preset_name, architecture, first_block):
    """The blocks from `first_block` on (those below are placeholders without weights), built as
    `architecture` (Backbone.architecture) says."""
    return Backbone(preset_of(preset_name), None, architecture["qkv_bias"], architecture["qk_norm"],
                    architecture["layer_scale"], first_block)


def random_backbone(preset_name, seed):
    """A seed-fixed random initialisation: truncated normal 0.02 for linear layers and the class
    token, the sincos table, layer scales at 1 (not the 1e-5 of training from scratch, which
    would leave random blocks next to identities)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Backbone(preset_of(preset_name))
        nn.init.trunc_normal_(model.cls_token, std=0.02)
        parts.initialise_linears(model)
    return model


def encoder_state(state):
    """The encoder weights of a published checkpoint's state dict, the variant it is
    (classifier, stage1, stage2 or encoder) and the names of what was left out."""
    variant, ignored = "classifier" if "head.weight" in state else "encoder", []
    if any(k.startswith(STAGE2_PREFIX) for k in state):
        variant, ignored = "stage2", [k for k in state if not k.startswith(STAGE2_PREFIX)]
        state = {k.removeprefix(STAGE2_PREFIX): v for k, v in state.items() if k.startswith(STAGE2_PREFIX)}
    elif any(k.startswith(("clip_decoder.", "mae_decoder.")) for k in state):
        variant = "stage1"
    ignored += [k for k in state if k.startswith(IGNORED_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    if "pos_embed" not in state and all(k in state for k in SEPARABLE_TABLE):
        state["pos_embed"] = joint_table(*(state.pop(k) for k in SEPARABLE_TABLE))
    return state, variant, sorted(ignored)


def joint_table(cls, temporal, spatial):
    """A separable position table (1, 1, C), (1, t, C), (1, h*w, C) as one (1, 1 + t*h*w, C)."""
    grid = temporal[0, :, None] + spatial[0, None]
    return torch.cat([cls[0], grid.flatten(0, 1)])[None]


def grid_of(state, preset, path):
    """The (t, h, w) grid of a checkpoint's position table, square in space at the preset's pixels."""
    side = preset.pixels // preset.patch
    table = state.get("pos_embed")
    if table is None:
        raise InputError(f"{path}: holds no pos_embed, the position table of every InternVideo2 file (a checkpoint "
                         "of another family?)")
    if table.ndim != 3 or (table.shape[1] - 1) % (side * side) or table.shape[1] <= 1:
        raise InputError(f"{path}: pos_embed {list(table.shape)} is no table of a class token and t x {side} x {side} "
                         "patch tokens")
    return (table.shape[1] - 1) // (side * side), side, side


def load(preset_name, checkpoint=None, seed=0):
    """The frozen backbone (eval mode, no gradients) and a report of what loading found."""
    if checkpoint is None:
        model = random_backbone(preset_name, seed)
        report = {"checkpoint": None, "seed": seed}
        log.warning("backbone %s: random weights (seed %d), no checkpoint given", preset_name, seed)
    else:
        model, report = from_state(read_state(checkpoint), preset_name, checkpoint)
        report = {"checkpoint": str(checkpoint), "size_bytes": Path(checkpoint).stat().st_size, **report}
    report["preset"] = preset_name
    return frozen(model, report)


def from_state(state, preset_name, path):
    """The model of preset `preset_name` holding a published checkpoint's `state` (read from
    `path`, named in errors) and what loading found; a state of meta tensors gives a meta model."""
    preset = preset_of(preset_name)
    state, variant, ignored = encoder_state(state)
    grid = grid_of(state, preset, path)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = Backbone(preset, grid, "blocks.0.attn.qkv.bias" in state, "blocks.0.attn.q_norm.weight" in state,
                         "blocks.0.ls1.gamma" in state)
    unexpected = assigned(model, state, path, preset_name)
    model.set_pixel_statistics(device="cpu")
    log.info("%s: loaded as InternVideo2 %s (%s, %d-frame positions), %d weight(s) of heads and decoders ignored",
             path, preset_name, variant, grid[0] * preset.tubelet, len(ignored))
    return model, {"variant": variant, "frames": grid[0] * preset.tubelet, "ignored": ignored,
                   "unexpected": unexpected}
