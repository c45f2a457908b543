"""Labels from an external video-level classifier, the ActivityNet protocol of ActionFormer and
OpenTAD: the head finds class-agnostic actions (one class, actionness), and each proposal is
given the video's top-k classes of a published classifier, score = fused(proposal, class).

Files: {"results": {video: [a score per class]}, "class": [names]} (CUHK's ActivityNet-1.3
classifier, `cuhk_val_simp_share.json`) or the same with "classes" (InternVideo's, e.g.
`new_3ensemble_uniformerv2_large_only_global_anet_16x10x3.json`). Video keys may carry
ActivityNet's `v_` prefix or not.
"""

import math

import numpy as np

from .io import InputError, read_json

# How a proposal's score and a class's score combine: ActionFormer (CUHK's file, top 2) and
# OpenTAD (InternVideo's) take the square root of the product; OpenTAD's CUHK reader the product.
COMBINE = {"product": lambda proposal, label: proposal * label,
           "sqrt": lambda proposal, label: math.sqrt(proposal * label)}
ACTIONNESS = "action"  # the one class of a head trained for actionness


def class_names(path):
    """The class names of a classifier file, in its order."""
    raw = read_json(path, ("results",), "a video-level classifier file")
    names = raw.get("class", raw.get("classes"))
    if not isinstance(names, list):
        raise InputError(f"{path}: not a video-level classifier file: no 'class' or 'classes' list of names")
    return [str(name) for name in names]


def load(path, videos, classes):
    """{video: scores of `classes`, in their order} for every one of `videos` from the file
    `path`; one InputError naming it if it is not such a file, lacks a class or a video, or
    holds a row of another length."""
    raw = read_json(path, ("results",), "a video-level classifier file")
    names = raw.get("class", raw.get("classes"))
    if not isinstance(raw["results"], dict) or not isinstance(names, list):
        raise InputError(f"{path}: not a video-level classifier file: expected {{'results': {{video: [scores]}}, "
                         "'class' or 'classes': [names]}")
    absent = sorted(set(classes) - set(names))
    if absent:
        raise InputError(f"{path}: holds no scores for {len(absent)} class(es) of the annotations, e.g. "
                         f"{', '.join(absent[:5])}")
    columns = [names.index(name) for name in classes]
    scores, missing = {}, []
    for video in videos:
        key = next((k for k in (video, f"v_{video}", video.removeprefix("v_")) if k in raw["results"]), None)
        if key is None:
            missing.append(video)
            continue
        row = raw["results"][key]
        if not isinstance(row, list) or len(row) != len(names):
            raise InputError(f"{path}: video {key}: {len(row) if isinstance(row, list) else 'no'} scores for "
                             f"{len(names)} classes")
        scores[video] = np.asarray(row, dtype=float)[columns]
    if missing:
        raise InputError(f"{path}: no scores for {len(missing)} of {len(videos)} videos, e.g. {', '.join(missing[:5])}")
    return scores


def fuse(detections, scores, classes, top_k, combine="sqrt"):
    """Class-agnostic `detections` ({score, segment}) of one video, each once for every one of
    the video's `top_k` classes by `scores`: label that class, score `combine`d; best first."""
    if combine not in COMBINE:
        raise InputError(f"classifier combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    best = np.argsort(-scores, kind="stable")[:top_k]
    fused = [{"label": classes[i], "score": round(COMBINE[combine](d["score"], float(scores[i])), 6),
              "segment": d["segment"]} for i in best for d in detections]
    return sorted(fused, key=lambda d: -d["score"])
