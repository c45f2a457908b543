"""config.yaml, read once: its cross-checks and the options of the `actloc` commands it drives.

The Snakefile validates config.yaml against its schema, then calls `check`; rules get their
command options from the functions here. No torch is imported (the Snakefile imports this
module), so method types are checked by finding their modules, not by loading them.
"""

import shlex
from pathlib import Path

from . import backbones, datasets, methods
from .backbones import DEFAULT_FAMILY, DEFAULT_TOKEN_GRID, default_layers
from .settings import LofiConfig, LosaConfig, PartialConfig, TrainConfig, head_config
from .store.snippets import check_protocol

# Folders of results/{ds}/ that a method's results/{ds}/{method}/ must not shadow.
RESERVED = {"cache", "videos", "source", "logs", "benchmarks"}
# The built-in methods' own settings, checked at parse time; another method's own entry is
# checked by its dataclass when it trains.
OWN_SETTINGS = {"losa": LosaConfig, "lofi": LofiConfig, "partial": PartialConfig}


class ConfigError(ValueError):
    """A config.yaml that cannot run; its message is one line naming the entry."""


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # a folder a GPU, where NVIDIA's driver runs


def gpu_resource(device):
    """The `gpu` resource of a job that runs the backbone or a detector: 1 where it will use a
    GPU (device cuda: a cluster's nodes have one, whatever the machine planning; auto on a
    machine with an NVIDIA GPU), else 0. Read without torch, at parse time."""
    if device.startswith("cuda"):
        return 1
    return int(device == "auto" and NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir()))


def lofi_methods(config):
    """The LoFi methods: each one's tuned backbone is a backbone named after it."""
    return [m for m, entry in config["methods"].items() if entry["type"] == "lofi"]


def imported_features(config):
    """Names of published features imported as caches, over every dataset."""
    return sorted({name for d in config["datasets"].values() for name in d.get("features", {})})


def check_settings(where, make, entry):
    """`make(**entry)` (a settings dataclass), or a ConfigError naming `where`."""
    try:
        return make(**entry)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config.yaml: {where}: {err}") from None


def computed(train):
    """Training settings but `gpus`: how many processes run a training, not what it computes."""
    return {key: value for key, value in train.items() if key != "gpus"}


def backbone_preset(config, name):
    """The Preset of backbone entry `name` (its family's, read without importing the family),
    checked to divide the entry's pixels into patches."""
    entry = config["backbones"][name]
    try:
        preset = backbones.preset(entry.get("family", DEFAULT_FAMILY), entry["preset"])
    except ValueError as err:
        raise ConfigError(f"config.yaml: backbones.{name}: {err}") from None
    if entry.get("pixels", preset.pixels) % preset.patch:
        raise ConfigError(f"config.yaml: backbones.{name}: pixels {entry['pixels']} is not a multiple of preset "
                          f"{entry['preset']!r}'s patch size, {preset.patch}")
    return preset


def check(config):
    """Every cross-check of a schema-valid config.yaml; the first failure is a ConfigError."""
    for name in config["backbones"]:
        backbone_preset(config, name)
    backbone_names, methods_ = list(config["backbones"]), config["methods"]
    lofi, imported = lofi_methods(config), imported_features(config)
    for ds in config["targets"]:
        if ds not in config["datasets"]:
            raise ConfigError(f"config.yaml: targets names {ds!r}, which is not under datasets")
    for name, entry in methods_.items():
        if name in RESERVED:
            raise ConfigError(f"config.yaml: method name {name!r} is reserved for a folder of results/<dataset>/")
        if not methods.exists(entry["type"]):
            raise ConfigError(f"config.yaml: method {name!r} has type {entry['type']!r}, which is no method "
                              f"(no module {methods.module_name(entry['type'])})")
        own = dict(entry.get(entry["type"], {}))
        if entry["type"] == "lofi":  # LoFi's stage A has training settings of its own
            check_settings(f"methods.{name}.lofi.train", TrainConfig, computed(own.pop("train", {})))
        if entry["type"] in OWN_SETTINGS:
            check_settings(f"methods.{name}.{entry['type']}", OWN_SETTINGS[entry["type"]], own)
        check_settings(f"methods.{name}.train", TrainConfig, computed(entry.get("train", {})))
    for name in set(imported) & set(backbone_names):
        raise ConfigError(f"config.yaml: {name!r} names both a backbone and imported features")
    for name in set(lofi) & (set(backbone_names) | set(imported)):
        raise ConfigError(f"config.yaml: {name!r} names both a LoFi method (whose tuned backbone takes its name) "
                          "and a backbone or imported features")
    for ds, d in config["datasets"].items():
        check_dataset(config, ds, d)


def check_dataset(config, ds, d):
    where = f"config.yaml: dataset {ds!r}"
    if not datasets.exists(d["type"]):
        raise ConfigError(f"{where} has type {d['type']!r}, which is no dataset type (no module "
                          f"actloc.datasets.{d['type']})")
    if d["type"] == "videos":
        return check_detect_dataset(config, ds, d)
    features = d.get("features", {})
    if d["backbone"] not in list(config["backbones"]) + list(features):
        raise ConfigError(f"{where} uses backbone {d['backbone']!r}, which is neither under backbones nor under "
                          "its features")
    published = imported(d)
    if published:
        try:
            check_protocol(published.get("frames", d["snippets"]["frames"]),
                           published.get("stride", d["snippets"]["stride"]), 1)
        except ValueError as err:
            raise ConfigError(f"{where}: features.{d['backbone']}: {err}") from None
    else:
        try:
            check_protocol(d["snippets"]["frames"], d["snippets"]["stride"],
                           backbone_preset(config, d["backbone"]).tubelet)
        except ValueError as err:
            raise ConfigError(f"{where}: snippets: {err}") from None
        if "decode" not in d:
            raise ConfigError(f"{where} reads videos (its backbone {d['backbone']!r} is no imported features) but has "
                              "no decode: {fps, short_side}")
        if d["type"] != "demo" and "videos" not in d:  # the demo renders its own
            raise ConfigError(f"{where} reads videos (its backbone {d['backbone']!r} is no imported features) but has "
                              "no videos: the folder of its source videos")
    for subset, names in d.get("select", {}).items():
        if isinstance(names, str) and not Path(names).is_file():
            raise ConfigError(f"{where}: select.{subset}: {names}: file not found (a text file, a video a line)")
    check_settings(f"dataset {ds!r}: head", lambda **entry: head_config(entry), d.get("head", {}))
    check_settings(f"dataset {ds!r}: train", TrainConfig, computed(d.get("train", {})))
    entry = config["backbones"].get(d["backbone"])
    channels = backbone_preset(config, d["backbone"]).width if entry else None  # imported: known once imported
    for method in d["methods"]:
        if method not in config["methods"]:
            raise ConfigError(f"{where} lists method {method!r}, which is not under methods")
        m = config["methods"][method]
        check_reads(where, method, m["type"], d["backbone"], entry)
        if m["type"] in ("losa", "partial") and channels:
            own = m.get(m["type"], {})
            losa = LosaConfig(**(own if m["type"] == "losa" else own.get("losa", {})))
            try:
                losa.adapter_width(channels)
            except ValueError as err:
                raise ConfigError(f"config.yaml: methods.{method} LoSA settings on dataset {ds!r} (backbone "
                                  f"{d['backbone']!r}, {channels} channels): {err}") from None



def cache_holds(entry):
    """What a dataset's cache holds: a backbone's config entry, or None for imported features."""
    if entry is None:  # one layer, no tokens, no videos
        return {"temporal": False, "tokens": False, "videos": False}
    return {"temporal": entry["temporal"], "tokens": "tokens" in entry, "videos": True}


def check_detect_dataset(config, ds, d):
    """A folder of videos that the methods trained on dataset `model` detect actions in."""
    where = f"config.yaml: dataset {ds!r}"
    model = config["datasets"].get(d["model"])
    if model is None or model["type"] == "videos":
        raise ConfigError(f"{where} takes its models from dataset {d['model']!r}, which is no dataset with "
                          "annotations under datasets")
    for method in d["methods"]:
        if method not in config["methods"]:
            raise ConfigError(f"{where} lists method {method!r}, which is not under methods")
    if imported(model):
        raise ConfigError(f"{where} takes its models from dataset {d['model']!r}, trained on imported features, "
                          "which nothing here computes from a video: train the model on a backbone's cache")


# What a cache may lack, in words, and the backbone setting that adds it.
LACKS = {"videos": ("videos", None), "temporal": ("temporal tokens", "temporal: true"),
         "tokens": ("block tokens", "tokens: {}")}


def check_reads(where, method, kind, backbone, entry):
    """A ConfigError unless the dataset's cache (`entry`: its backbone's config, None for imported
    features) holds what method `method` of type `kind` reads (actloc.methods.reads)."""
    reads, holds = methods.reads(kind), cache_holds(entry)
    lacking = [what for what in LACKS if reads[what] and not holds[what]]
    if not lacking:
        return
    if entry is None:
        fix = ("imported features are one layer without tokens and without videos: train head_only (or another "
               f"method reading the last layer alone) on them; {method} needs the backbone's own cache, so make "
               "the dataset's backbone an entry of backbones")
    else:
        fix = " and ".join(f"set {LACKS[what][1]} in backbones.{backbone}" for what in lacking)
    source = "is imported features, with" if entry is None else "caches"
    raise ConfigError(f"{where} trains method {method!r} (type {kind}), which reads {methods.describe_reads(reads)}, "
                      f"but its backbone {backbone!r} {source} no {' and no '.join(LACKS[w][0] for w in lacking)}: "
                      f"{fix}")


def method_settings(config, dataset, method):
    """`actloc train --settings` from config.yaml: the method's type and own settings, the
    dataset's head and decode settings, and the dataset's training settings overridden by the
    method's. A LoFi method's head trains on its tuned backbone's cache exactly as head_only
    (stage B)."""
    entry, data_entry = config["methods"][method], config["datasets"][dataset]
    kind = "head_only" if entry["type"] == "lofi" else entry["type"]
    name = kind.rsplit(".", 1)[-1]  # a method's own entry is named after it
    own = {name: entry[name]} if name in entry else {}
    actionness = {"actionness": True} if "classifier" in data_entry else {}  # a classifier labels the actions
    # How the videos were decoded, which the model records for `actloc detect` to decode new ones alike.
    decode = {} if imported(data_entry) else {"decode": {key: data_entry["decode"][key] for key in ("fps", "short_side")}}
    return {"method": kind, "head": data_entry.get("head", {}), **own, **decode,
            "train": {**training(config, dataset, method)[0], **actionness}}


def training(config, dataset, method, stage_a=False):
    """(training settings, processes) of a method on a dataset: the dataset's settings,
    overridden by the method's (and for LoFi's stage A, by its `lofi.train`), and apart from
    them their `gpus` (1): the processes, data-parallel on one node, a GPU each where the
    device is CUDA."""
    entry = config["methods"][method]
    merged = {**config["datasets"][dataset].get("train", {}), **entry.get("train", {}),
              **(entry.get("lofi", {}).get("train", {}) if stage_a else {})}
    return computed(merged), merged.get("gpus", 1)


def lofi_settings(config, dataset, method):
    """`actloc train --settings` of a LoFi method's stage A: its `lofi` entry (the dataset's snippet
    protocol filled in) and training settings: the dataset's, overridden by the method's, then
    by the `lofi.train` ones."""
    entry, data_entry = config["methods"][method], config["datasets"][dataset]
    lofi = dict(entry.get("lofi", {}))
    snippets = data_entry["snippets"]
    return {"method": "lofi", "head": data_entry.get("head", {}),
            "lofi": {key: value for key, value in lofi.items() if key != "train"}
            | {"snippet_frames": snippets["frames"], "stride": snippets["stride"]},
            "train": training(config, dataset, method, stage_a=True)[0]}


def demo_options(dataset, keys=None):
    """A demo dataset's settings (or only `keys` of them) as `actloc` options."""
    return shlex.join(arg for key, value in dataset["demo"].items() if keys is None or key in keys
                      for arg in (f"--{key.replace('_', '-')}", str(value)))


def subsets(dataset):
    """The subsets a dataset trains and tests on: the only videos decoded and cached."""
    return sorted({dataset["train_subset"], dataset["test_subset"]})


def imported(dataset):
    """The dataset's imported features entry that its methods train on, or None."""
    return dataset.get("features", {}).get(dataset.get("backbone"))


def sources(dataset):
    """What the dataset's videos are read from: its imported features' path, or its videos folder."""
    features = imported(dataset)
    return ["--features", features["path"]] if features else ["--videos", dataset["videos"]]


def selection(dataset):
    """`actloc annotations --select` values of a dataset's `select` (a file as @FILE)."""
    return [f"{subset}=@{names}" if isinstance(names, str) else f"{subset}={','.join(names)}"
            for subset, names in dataset.get("select", {}).items()]


def annotation_options(dataset):
    """`actloc annotations` options of a dataset entry (its --type aside)."""
    if dataset["type"] == "demo":
        return demo_options(dataset)
    if dataset["type"] == "videos":
        return shlex.join(["--source", dataset["videos"]])
    args = ["--source", dataset["annotations"], "--out-of-range", dataset["out_of_range"],
            "--subsets", *subsets(dataset), *sources(dataset), "--missing", dataset["missing"]]
    args += ["--select", *selection(dataset)] if "select" in dataset else []
    if dataset["type"] == "activitynet":
        args += ["--video-prefix", dataset["video_prefix"], "--defects", dataset["defects"]]
    if "metadata" in dataset:
        args += ["--metadata", dataset["metadata"]]
    return shlex.join(args)


THRESHOLD_TEXT = {"thumos": "0.3:0.1:0.7", "activitynet": "0.5:0.05:0.95"}


def evaluation_protocol(dataset):
    """One line naming how a dataset's table was made, printed under it."""
    parts = [f"ActivityNet's detection AP at tIoU {THRESHOLD_TEXT[dataset['eval_preset']]}"]
    if dataset["type"] == "thumos14":
        parts.append("false positives on Ambiguous segments left out (THUMOS-14 toolkit)"
                     if dataset["ambiguous"] == "ignore" else "Ambiguous segments unused (as ActionFormer reports)")
    fixed = dataset.get("train", {}).get("fixed_steps")
    if fixed:
        parts.append(f"features resampled to {fixed} steps a video")
    if "classifier" in dataset:
        entry = dataset["classifier"]
        parts.append(f"class-agnostic proposals labelled by {entry['path']} (top {entry['top_k']}, {entry['combine']})")
    return "Protocol: " + "; ".join(parts) + "."


def cache_settings(config, ds, method):
    """What the stores a method of dataset `ds` reads must record, as this config says (the
    training and inference jobs check them, so that a cache a `snakemake --touch` kept from other
    settings is refused, not read): the backbone (a LoFi method's tuned one), its taps and
    pixels, the snippet protocol and the frame rate."""
    d = config["datasets"][ds]
    features = imported(d)
    if features:
        expect = {"backbone": d["backbone"], "snippet_frames": features.get("frames", d["snippets"]["frames"]),
                  "stride": features.get("stride", d["snippets"]["stride"])}
        return expect | ({"fps": features["fps"]} if "fps" in features else {})
    entry = config["backbones"][d["backbone"]]
    preset = backbone_preset(config, d["backbone"])
    lofi = config["methods"][method]["type"] == "lofi"
    expect = {"backbone": method if lofi else d["backbone"], "layers": sorted(entry.get("layers") or
                                                                               default_layers(preset.depth)),
              "pixels": entry.get("pixels", preset.pixels), "temporal": entry["temporal"],
              "snippet_frames": d["snippets"]["frames"], "stride": d["snippets"]["stride"], "fps": d["decode"]["fps"]}
    if "checkpoint" not in entry and not lofi:  # a checkpoint's identity is its hash, known once read
        expect["identity"] = f"random:{entry['seed']}"
    if "tokens" in entry and not lofi:  # the block and grid the token cache holds (its other keys: the checkpoint's)
        tokens, grid = entry["tokens"], expect["pixels"] // preset.patch
        expect["block_tokens"] = {"block": tokens.get("block", preset.depth // 2),
                                  "grid": tokens.get("grid", min(DEFAULT_TOKEN_GRID, grid))}
    return expect


def import_options(dataset, name):
    """`actloc import-features` options of a dataset's features entry `name`: its snippet protocol
    (the dataset's where it states none) and frame rate (each video's own where it states none)."""
    entry = dataset["features"][name]
    args = ["--snippet-frames", str(entry.get("frames", dataset["snippets"]["frames"])),
            "--stride", str(entry.get("stride", dataset["snippets"]["stride"])), "--missing", dataset["missing"]]
    return shlex.join(args + (["--fps", str(entry["fps"])] if "fps" in entry else []))


def classifier_options(dataset):
    """`actloc infer` options of a dataset's video-level classifier, if it has one."""
    entry = dataset.get("classifier")
    if not entry:
        return ""
    return shlex.join(["--classifier", entry["path"], "--top-k", str(entry["top_k"]), "--combine", entry["combine"]])


def backbone_options(entry):
    """A backbone entry as `actloc backbone` options."""
    args = ["--family", entry["family"], "--preset", entry["preset"], "--seed", str(entry["seed"]),
            "--precision", entry["precision"]]
    args += ["--checkpoint", entry["checkpoint"]] if "checkpoint" in entry else []
    args += ["--pixels", str(entry["pixels"])] if "pixels" in entry else []
    args += ["--layers", *map(str, entry["layers"])] if "layers" in entry else []
    args += ["--temporal" if entry["temporal"] else "--no-temporal"]
    tokens = entry.get("tokens")
    if tokens is not None:  # {} asks for the defaults
        args += ["--tokens", *(arg for key in ("block", "grid") if key in tokens
                               for arg in (f"--token-{key}", str(tokens[key])))]
    return shlex.join(args)
