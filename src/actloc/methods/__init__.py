"""Methods: what each reads from the cache and the module that turns it into the head's input.

A method is a module holding `METHOD = Method(...)`: a module of this package named after it
(config.yaml's `type: losa`), or any importable module, by its name or dotted path
(`type: mylab.methods.toy`). `get` finds it; nothing else lists the methods. No torch here:
the Snakefile checks config.yaml's types with `exists`. See docs/extending.md.
"""

import ast
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from dataclasses import asdict, dataclass

from ..io import InputError
from ..settings import TrainConfig, head_config

# Modules of this package that are parts of every method, not methods.
PARTS = ("detector", "head", "nms")


@dataclass(frozen=True)
class Method:
    name: str
    layers: str  # what it reads of the cache's tapped layers: "last" or "all"
    temporal: bool  # whether it also reads the per-tubelet-step tokens
    # (channels, n_layers: how many layers are tapped, its settings or None) -> an nn.Module mapping
    # (pooled (B, L, T, C), temporal (B, L, T, t, C) or None, mask (B, T)) to features (B, T, C)
    features: Callable
    settings: type | None = None  # the dataclass of its own settings entry (`settings[name]`)
    # Its own training instead of the one against the cache (LoFi's stage A, on videos): the
    # stage module (actloc.stages.lofi) whose train(index, annotations, subset, settings, **the
    # `actloc train` options it uses) runs it.
    train: str | None = None
    # Whether it reads the block tokens (the token map leaving one block, docs/design.md#partial):
    # its `features` then also gets the store's attributes, and its module has
    # `upper_taps(pooled, temporal, block_tokens)` recomputing the taps above that block.
    tokens: bool = False

    def __post_init__(self):
        if self.layers not in ("last", "all"):
            raise ValueError(f"method {self.name}: layers must be 'last' or 'all', got {self.layers!r}")


def find(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose package does not exist
        return False


def module_name(name):
    """The module of method `name`: this package's, else the importable module of that name."""
    own = f"{__name__}.{name}"
    return own if "." not in name and find(own) else name


def exists(name):
    """Whether `name` is a method's module, found without importing it."""
    if not isinstance(name, str) or name in PARTS or not all(part.isidentifier() for part in name.split(".")):
        return False
    return find(module_name(name))


def reads(name):
    """What method `name` reads, from its module's `METHOD = Method(...)` without importing it (the
    Snakefile checks config.yaml against the caches with this, and importing a method imports
    torch): {"layers": "last" | "all", "temporal": bool, "tokens": bool, "videos": bool}, `videos`
    when it trains on the decoded videos (its own `train`). Declarations that are not literals
    read as the defaults, the method's own import then checks them."""
    declared = {"layers": "last", "temporal": False, "tokens": False, "videos": False}
    source = Path(importlib.util.find_spec(module_name(name)).origin).read_text()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "METHOD" for t in node.targets)
                and isinstance(node.value, ast.Call)):
            for keyword in node.value.keywords:
                if keyword.arg == "train":
                    declared["videos"] = not (isinstance(keyword.value, ast.Constant) and keyword.value.value is None)
                elif keyword.arg in declared and isinstance(keyword.value, ast.Constant):
                    declared[keyword.arg] = keyword.value.value
    return declared


def describe_reads(reads):
    """What a method reads, in words, for messages."""
    if reads["videos"]:
        return "the decoded videos (it tunes the backbone)"
    parts = ["the last tapped layer" if reads["layers"] == "last" else "every tapped layer"]
    parts += ["their temporal tokens"] * reads["temporal"] + ["the block tokens"] * reads["tokens"]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def get(name):
    """The Method of `name`; ValueError when there is none."""
    if not isinstance(name, str):
        raise ValueError(f"no method given (a method's name, e.g. head_only, losa, lofi), got {name!r}")
    if not exists(name):
        raise ValueError(f"unknown method {name!r}: no module {module_name(name)}")
    method = getattr(importlib.import_module(module_name(name)), "METHOD", None)
    if not isinstance(method, Method):
        raise ValueError(f"module {module_name(name)} holds no METHOD = actloc.methods.Method(...)")
    if method.name != name.rsplit(".", 1)[-1]:  # its own settings entry is found by this name
        raise ValueError(f"module {module_name(name)}: METHOD is named {method.name!r}, not after its module")
    return method


def own_settings(method, settings):
    """Method `method`'s own settings dataclass from `settings[<its name>]`, or None where it has
    none."""
    return method.settings(**settings.get(method.name, {})) if method.settings else None


def full_settings(settings):
    """A method's settings with every default written out (what its outputs record): method,
    head, train, the method's own entry and, where given, how its dataset's videos were decoded
    (`decode`: {fps, short_side}, which `actloc detect` decodes new videos with); an InputError
    naming what is wrong."""
    try:
        method = get(settings.get("method"))
        full = {"method": settings["method"], "head": asdict(head_config(settings.get("head", {}))),
                "train": asdict(TrainConfig(**settings.get("train", {})))}
        own = own_settings(method, settings)
    except (TypeError, ValueError) as err:  # unknown keys are TypeErrors of the dataclasses
        raise InputError(f"training settings: {err}") from None
    decode = settings.get("decode")
    if decode is not None and not (isinstance(decode, dict) and set(decode) == {"fps", "short_side"}):
        raise InputError(f"training settings: decode must be {{fps, short_side}} (how the videos were decoded), "
                         f"got {decode!r}")
    return full | ({method.name: asdict(own)} if own else {}) | ({"decode": dict(decode)} if decode else {})
