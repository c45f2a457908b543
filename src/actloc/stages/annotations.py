"""Annotations stage: a dataset's ground truth from its native files (actloc.datasets), as one
ActivityNet-form JSON and a class list."""

from pathlib import Path

from .. import datasets
from ..io import InputError, find_video, write_json, write_text
from ..store.features import feature_key, feature_sources


def choose(dataset, subsets, select=None, videos=None, features=None, missing="error"):
    """The dataset's videos that a run has (datasets.choose): only those selected, and with
    their source in the `videos` folder or among the `features`, where one is given."""
    if videos and not Path(videos).is_dir():
        raise InputError(f"{videos}: no such folder, where the dataset's videos should be: put them there, point "
                         "its videos at them, or train on imported features (its features)")
    if videos:
        has_source = lambda video, entry: find_video(videos, entry.get("file") or video).exists()  # noqa: E731
    elif features:
        sources = feature_sources(features)
        has_source = lambda video, entry: feature_key(video, entry, sources) is not None  # noqa: E731
    else:
        has_source = None
    return datasets.choose(dataset, subsets, select, has_source, videos or features, missing)


def save(dataset, out, classes_out):
    write_json(out, dataset)
    write_text(classes_out, "".join(f"{c}\n" for c in dataset["classes"]))


def summary(dataset):
    """Videos and action instances per subset, for logs and the command line."""
    counts = {}
    for item in dataset["database"].values():
        c = counts.setdefault(item["subset"], {"videos": 0, "instances": 0, "ambiguous": 0})
        c["videos"] += 1
        c["instances"] += len(item["annotations"])
        c["ambiguous"] += len(item["ambiguous"])
    return counts
