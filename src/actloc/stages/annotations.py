"""Annotations stage: a dataset's ground truth from its native files (actloc.datasets), as one
ActivityNet-form JSON and a class list."""

from ..io import write_json, write_text


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
