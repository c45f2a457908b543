"""What several backbone families share: layers under their checkpoints' names, the pixel
statistics, a position table's interpolation and the reading of a published checkpoint.
(Not a family: it declares no PRESETS.)"""

import argparse
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..io import InputError, load_weights
from . import Preset

log = logging.getLogger(__name__)

# ImageNet statistics on the 0-255 scale, with which VideoMAE and InternVideo2 were trained.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# What the published files wrap their state dict in.
WRAPPERS = ("module", "model", "state_dict")


class Mlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, width, patch, tubelet):
        super().__init__()
        self.proj = nn.Conv3d(3, width, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x):
        return self.proj(x)


class Encoder(nn.Module):
    """What a family's ViT shares: `forward` and `run_blocks` over its `blocks` (1-based), the
    pixel statistics. A subclass sets `preset`, `first_block` and `blocks`, and defines
    `embed(clips)` and `tap(index, x, grid)`: the grid's tokens (B, t, h*w, width) of the tokens x
    leaving block `index`."""

    def set_pixel_statistics(self, device=None):
        for name, values in (("pixel_mean", IMAGENET_MEAN), ("pixel_std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(values, device=device).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, clips, layers):
        """Tokens (B, t, h*w, width) after each requested block (1-based), in the order asked."""
        x, grid = self.embed(clips)
        return self.run_blocks(x, grid, 0, layers)

    def run_blocks(self, x, grid, start, layers, run=None):
        """Tokens (B, t, h*w, width) after each of `layers` (1-based, in the order asked), from
        the tokens x leaving block `start` (0: the embedding) of the (t, h, w) `grid`. `run(index,
        block, x)` runs a block, if given (checkpointing, adapters)."""
        if not layers or min(layers) <= start or max(layers) > len(self.blocks) or start < self.first_block:
            raise ValueError(f"layers must be within {max(start, self.first_block) + 1}..{len(self.blocks)}, "
                             f"got {list(layers)}")
        taps = {}
        for index in range(start + 1, max(layers) + 1):
            block = self.blocks[index - 1]
            x = run(index, block, x) if run else block(x)
            if index in layers:
                taps[index] = self.tap(index, x, grid)
        return [taps[layer] for layer in layers]


def preset_of(presets, name, family):
    """The Preset `name` of a family's `presets`; an InputError naming them when there is none."""
    if name not in presets:
        raise InputError(f"unknown {family} preset {name!r}; one of {', '.join(presets)}")
    return Preset(**presets[name])


def initialise_linears(model):
    """A ViT's random initialisation of its linear layers: truncated normal 0.02, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def normalized(clips, mean, std):
    """uint8 RGB clips (B, frames, H, W, 3) -> (B, 3, frames, H, W) in `mean`'s dtype, standardised."""
    return (clips.permute(0, 4, 1, 2, 3).to(mean.dtype) - mean) / std


def check_divides(clips, preset):
    _, frames, height, width, _ = clips.shape
    if frames % preset.tubelet or height % preset.patch or width % preset.patch:
        raise ValueError(f"clips of {frames} frames of {height}x{width} do not divide into "
                         f"{preset.tubelet}x{preset.patch}x{preset.patch} tubelets")


def interpolated(table, native, grid):
    """A position table (1, t*h*w, C) of the `native` (t, h, w) grid for another `grid`:
    trilinear interpolation, time-major as the tokens."""
    if tuple(grid) == tuple(native):
        return table
    cube = table.reshape(1, *native, -1).permute(0, 4, 1, 2, 3)
    cube = F.interpolate(cube.float(), size=tuple(grid), mode="trilinear", align_corners=False)
    return cube.flatten(2).transpose(1, 2).to(table.dtype)


def read_state(path):
    """The state dict of tensors in a published checkpoint, out of its wrapper, without the
    `module.` prefix of distributed training."""
    state = load_weights(path, [argparse.Namespace])  # training checkpoints pickle their options too
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path}: holds no state dict of tensors (looked under {', '.join(WRAPPERS)})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_state(path, model_shapes, state, preset_name, own=()):
    """Compare a checkpoint with a model's {name: shape}: raise on missing keys or other shapes;
    return the unexpected keys (reported, not loaded) but those in `own`, which the family reads
    itself."""
    missing = [k for k in model_shapes if k not in state]
    wrong = [f"{k}: checkpoint {list(state[k].shape)}, preset {list(model_shapes[k])}"
             for k in model_shapes if k in state and tuple(state[k].shape) != tuple(model_shapes[k])]
    if wrong:
        raise InputError(f"{path}: does not fit preset {preset_name!r}: {len(wrong)} shape(s) differ, "
                         f"e.g. {'; '.join(wrong[:3])}")
    if missing:
        raise InputError(f"{path}: {len(missing)} weight(s) of preset {preset_name!r} missing, "
                         f"e.g. {', '.join(missing[:5])}")
    return sorted(k for k in state if k not in model_shapes and k not in own)


def assigned(model, state, path, preset_name, own=()):
    """Load a published checkpoint's `state` (read from `path`) into `model`, built on the meta
    device, as float32 (checkpoints saved in half precision run in fp32 or bf16 autocast), after
    `check_state`; the unexpected keys, warned of and not loaded."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    unexpected = check_state(path, shapes, state, preset_name, own)
    model.load_state_dict({k: state[k] for k in shapes}, assign=True)
    model.float()
    if unexpected:
        log.warning("%s: %d unexpected weight(s) not loaded: %s", path, len(unexpected), ", ".join(unexpected[:10]))
    return unexpected


def frozen(model, report):
    """The model in eval mode without gradients, and `report` completed with what every family
    reports."""
    model.requires_grad_(False).eval()
    report.update(parameters=sum(p.numel() for p in model.parameters()), architecture=model.architecture)
    return model, report
