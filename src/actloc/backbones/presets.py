"""The VideoMAE family's sizes and input conventions, without torch (config checks read them)."""

from dataclasses import dataclass

# ImageNet statistics on the 0-255 scale, as the official models were trained with.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
TUBELET = 2  # frames per token


@dataclass(frozen=True)
class Preset:
    width: int
    depth: int
    heads: int
    mlp: int
    patch: int
    frames: int = 16  # the clip length and pixel size the position table is built for;
    pixels: int = 224  # other inputs get it interpolated


PRESETS = {
    "tiny": Preset(width=192, depth=4, heads=3, mlp=768, patch=16, pixels=112),
    "small": Preset(width=384, depth=12, heads=6, mlp=1536, patch=16),
    "base": Preset(width=768, depth=12, heads=12, mlp=3072, patch=16),
    "large": Preset(width=1024, depth=24, heads=16, mlp=4096, patch=16),
    "huge": Preset(width=1280, depth=32, heads=16, mlp=5120, patch=16),
    "giant": Preset(width=1408, depth=40, heads=16, mlp=6144, patch=14),
}


# The side of the token grid the cache keeps for partial by default (4 x 4 a tubelet step: ViT-g's
# 0.36 MB a snippet, not 5.8 at its full 16 x 16), or the full grid where that is smaller.
DEFAULT_TOKEN_GRID = 4


def default_layers(depth, count=4):
    """`count` blocks evenly spaced up to the last one, 1-based: depth 40 -> 10, 20, 30, 40."""
    return sorted({max(1, round(depth * k / count)) for k in range(1, count + 1)})
