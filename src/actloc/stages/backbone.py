"""Backbone stage: load and check a backbone once, and record what the cache stage needs to
rebuild it (settings, the weights' identity, the loading report) as JSON."""

from ..backbones.presets import default_layers
from ..backbones.videomae import load
from ..io import InputError, read_json, sha256


def identity(checkpoint=None, seed=0):
    """What a cache records as its backbone's weights: `sha256:<hex>` of the file, or `random:<seed>`."""
    return f"random:{seed}" if checkpoint is None else f"sha256:{sha256(checkpoint)}"


SETTINGS = ("name", "preset", "checkpoint", "seed", "identity", "layers", "pixels", "temporal", "precision")


def describe(name, preset_name, checkpoint=None, seed=0, pixels=None, layers=None, temporal=True,
             precision="fp32"):
    """Everything the cache stage needs to rebuild this backbone, checked once: the settings,
    the weights' identity and the loading report. Written as JSON by `actloc backbone`."""
    model, report = load(preset_name, checkpoint, seed)
    preset = model.preset
    layers = sorted(set(layers)) if layers else default_layers(preset.depth)
    if layers[0] < 1 or layers[-1] > preset.depth:
        raise InputError(f"backbone {name}: layers {layers} outside 1..{preset.depth} of preset {preset_name!r}")
    pixels = pixels or preset.pixels
    if pixels % preset.patch:
        raise InputError(f"backbone {name}: pixels {pixels} is not a multiple of the patch size {preset.patch}")
    if precision not in ("fp32", "bf16"):
        raise InputError(f"backbone {name}: precision must be fp32 or bf16, not {precision!r}")
    return {"name": name, **report, "seed": seed, "identity": identity(checkpoint, seed), "layers": layers,
            "pixels": pixels, "temporal": temporal, "precision": precision}


def read_description(path):
    """A JSON written by `describe`, checked to hold what the cache stage needs."""
    settings = read_json(path)
    absent = [key for key in SETTINGS if key not in settings]
    if absent:
        raise InputError(f"{path}: not written by `actloc backbone` (no {', '.join(absent)})")
    return settings
