"""Backbone stage: load and check a backbone once, and record what the cache stage needs to
rebuild it (settings, the weights' identity, the loading report) as JSON."""

from .. import backbones
from ..backbones import DEFAULT_FAMILY, DEFAULT_TOKEN_GRID, default_layers
from ..io import InputError, read_json, sha256


def identity(checkpoint=None, seed=0):
    """What a cache records as its backbone's weights: `sha256:<hex>` of the file, or `random:<seed>`."""
    return f"random:{seed}" if checkpoint is None else f"sha256:{sha256(checkpoint)}"


SETTINGS = ("name", "preset", "checkpoint", "seed", "identity", "layers", "pixels", "temporal", "precision")


def describe(name, preset_name, checkpoint=None, seed=0, pixels=None, layers=None, temporal=True,
             precision="fp32", tokens=None, family=DEFAULT_FAMILY):
    """Everything the cache stage needs to rebuild this backbone, checked once: the settings,
    its family and tubelet, the weights' identity and the loading report. Written as JSON by
    `actloc backbone`.

    `tokens` ({block, grid}, either left out for its default, or None for none) also caches the
    token map leaving that block, pooled to grid x grid a tubelet step, for partial
    (actloc.methods.partial); it records the architecture the upper blocks are built with."""
    try:
        model, report = backbones.get(family).load(preset_name, checkpoint, seed)
    except ValueError as err:  # an unknown family
        raise InputError(f"backbone {name}: {err}") from None
    preset = model.preset
    layers = sorted(set(layers)) if layers else default_layers(preset.depth)
    if layers[0] < 1 or layers[-1] > preset.depth:
        raise InputError(f"backbone {name}: layers {layers} outside 1..{preset.depth} of preset {preset_name!r}")
    pixels = pixels or preset.pixels
    if pixels % preset.patch:
        raise InputError(f"backbone {name}: pixels {pixels} is not a multiple of the patch size {preset.patch}")
    if precision not in ("fp32", "bf16"):
        raise InputError(f"backbone {name}: precision must be fp32 or bf16, not {precision!r}")
    return {"name": name, "family": family, "tubelet": preset.tubelet, **report, "seed": seed,
            "identity": identity(checkpoint, seed), "layers": layers,
            "pixels": pixels, "temporal": temporal, "precision": precision,
            "block_tokens": None if tokens is None else block_tokens(name, model, pixels, report["architecture"],
                                                                     **tokens)}


def block_tokens(name, model, pixels, architecture, block=None, grid=None):
    """The token cache's settings: block k (default half the depth) and grid g (default
    DEFAULT_TOKEN_GRID, at most the full grid), with what the blocks above k are built with
    (`architecture`, as the family's loading reported it)."""
    depth, full = len(model.blocks), pixels // model.preset.patch
    block = depth // 2 if block is None else block
    grid = min(DEFAULT_TOKEN_GRID, full) if grid is None else grid
    if not 1 <= block < depth:
        raise InputError(f"backbone {name}: tokens.block {block} must be within 1..{depth - 1}, leaving a block above")
    if not 1 <= grid <= full:
        raise InputError(f"backbone {name}: tokens.grid {grid} must be within 1..{full} (the full grid: {pixels} px "
                         f"in patches of {model.preset.patch})")
    return {"block": block, "grid": grid, **architecture}


def read_description(path):
    """A JSON written by `describe`, checked to hold what the cache stage needs; one written
    before families were recorded is VideoMAE's, with its preset's tubelet."""
    settings = read_json(path)
    absent = [key for key in SETTINGS if key not in settings]
    if absent:
        raise InputError(f"{path}: not written by `actloc backbone` (no {', '.join(absent)})")
    if "tubelet" not in settings:
        settings["family"] = settings.get("family", DEFAULT_FAMILY)
        try:
            settings["tubelet"] = backbones.preset(settings["family"], settings["preset"]).tubelet
        except ValueError as err:
            raise InputError(f"{path}: {err}") from None
    return settings
