"""Backbone families: the frozen video encoders whose activations the cache holds.

A family is a module (docs/extending.md#adding-a-backbone): one of this package named after it
(config.yaml's backbone `family: videomae`, the default), or any importable module by its name
or dotted path. It holds, as literals, `PRESETS = {name: {width, depth, heads, mlp, patch,
tubelet, frames, pixels}}`, which `presets` reads from its source without importing it (the
Snakefile checks config.yaml with them, and a family's model imports torch), and:

    load(preset, checkpoint=None, seed=0) -> (model, report): the frozen model (eval, no
        gradients) from a published checkpoint, or random weights from `seed`; the report says
        what loading found (`architecture`: what `upper_blocks` needs to rebuild its blocks)
    upper_blocks(preset, architecture, first_block) -> a model holding only the blocks from
        `first_block` on (partial tunes them on cached block tokens)

and the model: `preset` (a Preset), `blocks` (an nn.ModuleList), `stem` (the modules before
them), `embed(clips)` -> (tokens (B, [extra +] t*h*w, width), grid (t, h, w)) of uint8 RGB
clips (B, frames, H, W, 3), any tokens beyond the grid (a class token) first,
`run_blocks(x, grid, start, layers, run=None)` -> the grid's tokens (B, t, h*w, width) leaving
each of `layers` (1-based; partial gives it the cached grid's tokens alone), `forward(clips,
layers)` = both, and `pool(tokens, layer, temporal)` -> a snippet's vector (B, width) or its
per-tubelet-step ones (B, t, width). `parts` holds what several families share.
Its parameter names are its checkpoints' keys, so `state_dict()` saves a checkpoint it loads.
Nothing outside this package knows a family's constants: the stores record the family and its
tubelet.
"""

import ast
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FAMILY = "videomae"
# The side of the token grid the cache keeps for partial by default (4 x 4 a tubelet step: ViT-g's
# 0.36 MB a snippet, not 5.8 at its full 16 x 16), or the full grid where that is smaller.
DEFAULT_TOKEN_GRID = 4


@dataclass(frozen=True)
class Preset:
    width: int
    depth: int
    heads: int
    mlp: int
    patch: int
    tubelet: int = 2  # frames a token spans
    frames: int = 16  # the clip length and pixel size the position table is built for;
    pixels: int = 224  # other inputs get it interpolated


def module_name(family):
    """The module of `family`: this package's, else the importable module of that name."""
    own = f"{__name__}.{family}"
    return own if "." not in family and find(own) else family


def find(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose package does not exist
        return False


def presets(family=DEFAULT_FAMILY):
    """{name: Preset} of `family`, read from its module's `PRESETS` literal without importing it;
    ValueError when there is no such family or it declares none."""
    if not isinstance(family, str) or not all(part.isidentifier() for part in family.split(".")) \
            or not find(module_name(family)):
        raise ValueError(f"unknown backbone family {family!r}: no module {module_name(str(family))}")
    source = Path(importlib.util.find_spec(module_name(family)).origin).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PRESETS" for t in node.targets):
            try:
                return {name: Preset(**entry) for name, entry in ast.literal_eval(node.value).items()}
            except (ValueError, TypeError) as err:
                raise ValueError(f"module {module_name(family)}: PRESETS is not a literal dict of presets ({err})")
    raise ValueError(f"module {module_name(family)} declares no PRESETS = {{name: {{width, depth, ...}}}}")


def preset(family, name):
    """The Preset `name` of `family`; ValueError naming the family's presets when there is none."""
    known = presets(family)
    if name not in known:
        raise ValueError(f"unknown preset {name!r} of backbone family {family}; one of {', '.join(known)}")
    return known[name]


def get(family=DEFAULT_FAMILY):
    """The module of `family`, imported (it imports torch)."""
    presets(family)  # a clear error for an unknown family
    module = importlib.import_module(module_name(family))
    absent = [name for name in ("load", "upper_blocks") if not callable(getattr(module, name, None))]
    if absent:
        raise ValueError(f"backbone family module {module_name(family)} has no {', '.join(absent)} (see "
                         "actloc.backbones)")
    return module


def load(description):
    """(model, report) of a backbone as `actloc backbone` described it (stages.backbone)."""
    return get(description.get("family", DEFAULT_FAMILY)).load(description["preset"], description["checkpoint"],
                                                               description["seed"])


def after_blocks(model):
    """The modules of a family's model after its blocks (its final norms): neither `stem` nor
    `blocks`. What trains with the top blocks when they are tuned."""
    return [module for module in model.children()
            if module is not model.blocks and not any(module is part for part in model.stem)]


def default_layers(depth, count=4):
    """`count` blocks evenly spaced up to the last one, 1-based: depth 40 -> 10, 20, 30, 40."""
    return sorted({max(1, round(depth * k / count)) for k in range(1, count + 1)})
