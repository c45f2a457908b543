import hashlib
import json
import math
import os
import re
import shlex
import sys
from functools import cache
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from actloc import chunks
from actloc.config import (
    ConfigError,
    annotation_options,
    backbone_options,
    cache_settings,
    classifier_options,
    check as check_config,
    demo_options,
    evaluation_protocol,
    gpu_resource,
    import_options,
    imported,
    imported_features,
    lofi_methods,
    lofi_settings,
    method_settings,
    training,
    sources,
    subsets as dataset_subsets,
)
from actloc.io import find_video

# Rules run the `actloc` installed beside the Python that runs Snakemake, so that
# `.venv/bin/snakemake` works from a shell where .venv is not activated; with
# --software-deployment-method conda, the rule's environment provides it instead.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    ACTLOC_BIN = Path(sys.executable).parent
    if not (ACTLOC_BIN / "actloc").is_file():
        raise WorkflowError(
            f"actloc is not installed for {sys.executable}: run `make` once, then"
            " `source .venv/bin/activate` (or run .venv/bin/snakemake)"
        )
    shell.prefix(f'export PATH={shlex.quote(str(ACTLOC_BIN))}:"$PATH"; ')

try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

DEMO_DATASETS = [ds for ds, d in config["datasets"].items() if d["type"] == "demo"]
# Folders of unannotated videos that another dataset's trained methods detect actions in.
DETECT_DATASETS = [ds for ds, d in config["datasets"].items() if d["type"] == "videos"]
BACKBONES = list(config["backbones"])
# Published features imported as caches, named per dataset under `features`.
IMPORTED = imported_features(config)
METHODS = list(config["methods"])
# A LoFi method's tuned backbone is a backbone named after the method, built per dataset.
LOFI = lofi_methods(config)


wildcard_constraints:
    ds="|".join(config["datasets"]),
    chunk=chunks.NAME.pattern,
    method="|".join(map(re.escape, METHODS)) or "no-method",


def dataset(wildcards):
    return config["datasets"][wildcards.ds]


def demo_args(wildcards, keys=None):
    """The demo settings (or only `keys` of them) as `actloc` options."""
    return demo_options(dataset(wildcards), keys)


@cache
def read_annotations(path, modified_ns):
    # Parsed once per Snakemake process and version of the file: ActivityNet's JSON is large
    # and every chunk asks.
    with open(path) as f:
        return json.load(f)["database"]


def annotations_version(wildcards):
    """(path, modification time) of the dataset's annotations, once its checkpoint has run."""
    path = checkpoints.annotations.get(ds=wildcards.ds).output.json
    return path, Path(path).stat().st_mtime_ns


def all_videos(wildcards):
    """Every video of the dataset."""
    return read_annotations(*annotations_version(wildcards))


def subsets(wildcards):
    """The subsets the dataset trains and tests on: the only videos decoded and cached."""
    return dataset_subsets(dataset(wildcards))


@cache
def chunk_table(ds, version, wanted):
    database = read_annotations(*version)
    return chunks.split(
        [v for v, entry in database.items() if entry["subset"] in wanted],
        config["datasets"][ds]["chunks"],
    )


def dataset_chunks(wildcards):
    """{chunk: its videos} of the dataset's decoded subsets (see actloc.chunks), computed once
    per version of its annotations."""
    return chunk_table(
        wildcards.ds, annotations_version(wildcards), tuple(subsets(wildcards))
    )


def chunk_videos(wildcards):
    return dataset_chunks(wildcards)[wildcards.chunk]


def per_chunk(pattern):
    """An input function: `pattern` (with {ds} and {chunk}, and {backbone} if it has one) for
    every chunk of the dataset."""
    return lambda wildcards: [
        pattern.format(chunk=chunk, **wildcards) for chunk in dataset_chunks(wildcards)
    ]


def source_videos(wildcards):
    """The source files of a chunk's videos; a missing one is reported by Snakemake with its path."""
    d = dataset(wildcards)
    videos = chunk_videos(wildcards)
    if d["type"] == "demo":
        return [f"results/{wildcards.ds}/source/{video}.mp4" for video in videos]
    database = all_videos(wildcards)
    return [str(find_video(d["videos"], database[video]["file"])) for video in videos]


def decode_inputs(wildcards):
    """What a decode chunk reads: the demo renderer's chunk, or the source files."""
    if dataset(wildcards)["type"] == "demo":
        return f"results/{wildcards.ds}/source/chunks/{wildcards.chunk}.json"
    return source_videos(wildcards)


def decoded_videos(wildcards):
    return [f"results/{wildcards.ds}/videos/{v}.mp4" for v in chunk_videos(wildcards)]


def chunk_runtime(minutes_per_video):
    """runtime (minutes) of a chunk job: `minutes_per_video` for each of its videos, at least 10."""
    return lambda wildcards: max(
        10, math.ceil(minutes_per_video * len(chunk_videos(wildcards)))
    )


def backbone_args(wildcards):
    """The backbone's config entry as `actloc backbone` options."""
    return backbone_options(config["backbones"][wildcards.backbone])


def backbone_description(ds, backbone):
    """What `actloc backbone` wrote for a backbone: LoFi's tuned one comes from its stage A."""
    if backbone in LOFI:
        return f"results/{ds}/{backbone}/backbone.json"
    return f"results/backbones/{backbone}.json"


def backbone_json(wildcards):
    return backbone_description(wildcards.ds, wildcards.backbone)


def base_backbone(wildcards):
    """The config entry of a backbone, or of the one a LoFi method tuned."""
    name = wildcards.backbone
    return config["backbones"][dataset(wildcards)["backbone"] if name in LOFI else name]


def cache_index(wildcards):
    """The index of the cache a method trains on: LoFi's tuned backbone's, else the dataset's."""
    if wildcards.method in LOFI:
        return f"results/{wildcards.ds}/cache/{wildcards.method}.json"
    return f"results/{wildcards.ds}/cache/{dataset(wildcards)['backbone']}.json"


def classifier_file(wildcards):
    """The dataset's video-level classifier file, if it has one."""
    return dataset(wildcards).get("classifier", {}).get("path", [])


def tuned_backbone(wildcards):
    """The backbone JSON a method tunes the upper blocks of (partial), or none."""
    if config["methods"][wildcards.method]["type"] != "partial":
        return []
    return f"results/backbones/{dataset(wildcards)['backbone']}.json"


def tuned_backbone_option(wildcards, input):
    """`actloc train --backbone` for a method that tunes the upper blocks, else nothing."""
    return f"--backbone {shlex.quote(input.backbone)}" if input.get("backbone") else ""


def methods_of(wildcards):
    return dataset(wildcards)["methods"]


def per_method(name):
    """An input function: results/{ds}/{method}/<name> for every method of the dataset."""
    return lambda wildcards: [
        f"results/{wildcards.ds}/{method}/{name}" for method in methods_of(wildcards)
    ]


def expected_stores(wildcards):
    """`--expect`: what the stores a method trains on record, as config.yaml says now (a cache
    kept by `snakemake --touch` from other settings is then refused, not read)."""
    return json.dumps(
        cache_settings(config, wildcards.ds, wildcards.method), sort_keys=True
    )


def train_settings(wildcards):
    """`actloc train --settings`, as JSON."""
    settings = method_settings(config, wildcards.ds, wildcards.method)
    return json.dumps(settings, sort_keys=True)


def training_processes(wildcards):
    """The processes of a training (its `train.gpus`), data-parallel on one node."""
    return training(config, wildcards.ds, wildcards.method)[1]


def stage_a_processes(wildcards):
    """The processes of a LoFi method's stage A (its `train.gpus`, or its `lofi.train.gpus`)."""
    return training(config, wildcards.ds, wildcards.method, stage_a=True)[1]


def launcher(processes):
    """What starts `actloc train` in a rule's command: nothing for one process; torchrun for
    several (on the job's node, at a free port: two trainings on one node do not meet).
    """
    return lambda wildcards: (
        f"torchrun --standalone --nproc-per-node {processes(wildcards)} --no-python "
        if processes(wildcards) > 1
        else ""
    )


def lofi_train_settings(wildcards):
    """`actloc train --settings` of a LoFi method's stage A, as JSON."""
    settings = lofi_settings(config, wildcards.ds, wildcards.method)
    return json.dumps(settings, sort_keys=True)


def stage_a_summaries(wildcards):
    """{method: its stage A's summary} for the dataset's LoFi methods."""
    return {
        method: f"results/{wildcards.ds}/{method}/stage_a.json"
        for method in methods_of(wildcards)
        if method in LOFI
    }


def stage_a_args(wildcards):
    """`actloc report --stage-a METHOD=PATH ...`, or nothing without a LoFi method."""
    pairs = [f"{m}={path}" for m, path in stage_a_summaries(wildcards).items()]
    return shlex.join(["--stage-a", *pairs]) if pairs else ""


# Cluster resources (profiles/slurm). A failed job is retried there with its memory times the
# attempt number, so one killed for memory gets more. The jobs that run the backbone or a
# detector ask for a GPU where they will use one (device cuda, or auto on a GPU machine): on
# SLURM `sbatch --gpus=1`; locally the default profile's `gpu=1` runs them one at a time. A
# training of several processes asks for a GPU each, on one node.
GPU = gpu_resource(config["device"])


def memory(mb):
    """mem_mb: `mb` MB, or `mb(wildcards)` MB, times the attempt number."""
    return lambda wildcards, attempt: (mb(wildcards) if callable(mb) else mb) * attempt


def detect_model(wildcards):
    """The model.pt of the method trained on a videos dataset's `model` dataset."""
    return f"results/{dataset(wildcards)['model']}/{wildcards.method}/model.pt"


def detect_backbone(wildcards):
    """The backbone JSON that built that model's cache: LoFi's tuned one, else its dataset's."""
    model = dataset(wildcards)["model"]
    backbone = (
        wildcards.method
        if wildcards.method in LOFI
        else config["datasets"][model]["backbone"]
    )
    return backbone_description(model, backbone)


def detect_backbone_entry(wildcards):
    """The config entry of the backbone that built that model's cache."""
    return config["backbones"][
        config["datasets"][dataset(wildcards)["model"]]["backbone"]
    ]


def target_files(ds):
    """What a plain run builds of dataset `ds`: its table and plots, or, for a folder of
    videos, every method's detections."""
    if ds in DETECT_DATASETS:
        return [
            f"results/{ds}/{method}/detections.json"
            for method in config["datasets"][ds]["methods"]
        ]
    return [f"results/{ds}/map.csv", f"results/{ds}/plots/timelines.png"]


def decoded_index(wildcards):
    """The decoded videos a view page links to: the dataset's decode index, where it has one."""
    d = dataset(wildcards)
    if d["type"] == "videos" or imported(d):
        return []
    return f"results/{wildcards.ds}/videos.json"


def view_videos_folder(wildcards):
    """Where a view page finds the decoded videos: the dataset's, or a detect folder's cache."""
    if wildcards.ds in DETECT_DATASETS:
        return f"results/{wildcards.ds}/{wildcards.method}/detect/cache/videos"
    return f"results/{wildcards.ds}/videos"


def view_args(wildcards):
    """`actloc view`'s ground truth options: the test subset's, for a dataset with annotations."""
    d = dataset(wildcards)
    if d["type"] == "videos":
        return ""
    return shlex.join(
        [
            "--annotations",
            f"results/{wildcards.ds}/annotations.json",
            "--subset",
            d["test_subset"],
            "--preset",
            d["eval_preset"],
        ]
    )
