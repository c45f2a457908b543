"""Infer stage: a trained method over every test video, detections in seconds.

Output is ActivityNet result JSON: {"results": {video: [{label, score, segment}]}}, each
video's segments best first and clipped to [0, duration].
"""

import logging
from pathlib import Path

import torch

from ..engine.device import resolve_device
from .. import classifier as external
from ..io import InputError, read_annotations, sha256, write_json
from ..methods import detector
from ..progress import progress
from ..store import windows
from ..store.stores import SHARED_ATTRS, StoreWriter, write_index, write_store

log = logging.getLogger(__name__)


@torch.no_grad()
def detect(net, video, classes, device):
    """One video's detections as ActivityNet result entries."""
    batch = windows.to_device(windows.collate([video], [(0, video.length)], net.reads, net.head.max_stride), device)
    (segments, scores, labels), = net.head.detect(net(batch), batch["lengths"])
    seconds = video.seconds(segments)
    return [{"label": classes[label], "score": round(float(score), 6),
             "segment": [round(float(start), 3), round(float(end), 3)]}
            for (start, end), score, label in zip(seconds, scores, labels) if end > start]


def write_features(net, video, folder, identity):
    """A store of `video`'s taps as a method that tunes the backbone computes them (the tuned
    upper blocks on the cached tokens), so that another head can train on them; `identity`
    names the tuned weights."""
    inputs = net.read_inputs(video.cache.read(**net.reads))
    attrs = {key: value for key, value in video.cache.attrs.items()
             if key not in (*StoreWriter.KNOWN, "actloc_cache", "actloc_version")}
    attrs.update(backbone=f"{attrs['backbone']}+{net.method}", identity=f"{attrs['identity']}+{identity}",
                 block_tokens=None)
    write_store(Path(folder) / f"{video.name}.zarr", video.name, video.cache.layers, inputs["pooled"].numpy(),
                inputs["temporal"].numpy() if "temporal" in inputs else None, **attrs)


def write_results(out, results):
    """{video: detections} as an ActivityNet result file."""
    write_json(out, {"version": "actloc", "results": results, "external_data": {}})


def run(model_path, index, annotations, subset, out, device="auto", features=None, classifier=None, expect=None):
    """The `actloc infer` command: write detections.json, return how many segments it holds.
    `features`: a folder where a method that tunes the backbone (partial) also writes each
    video's taps as its tuned blocks compute them, a store each, and their index beside
    (`<folder>.json`): a cache another head trains on, as LoFi's stage B does.
    `classifier`: {path, top_k, combine} of a video-level classifier file, which labels the
    proposals of a model trained for actionness (train.actionness). `expect`: what every store
    must record (this run's settings, windows.load)."""
    device = resolve_device(device)
    net, saved = detector.load(model_path, device)
    trained = saved["settings"]["train"]
    if trained.get("actionness") != bool(classifier):
        raise InputError(f"{model_path}: trained for {'actionness' if trained.get('actionness') else 'classes'}: "
                         + ("give the video-level classifier that labels its proposals (--classifier)"
                            if trained.get("actionness") else "it takes no --classifier"))
    videos, classes = windows.load(index, annotations, subset, trained.get("fixed_steps"), trained.get("actionness"),
                                   expect)
    if classifier:
        labels = read_annotations(annotations)["classes"]
        video_scores = external.load(classifier["path"], [video.name for video in videos], labels)
    if classes != saved["classes"]:
        raise InputError(f"{model_path}: trained on classes {saved['classes'][:5]}..., {annotations} has "
                         f"{classes[:5]}...; retrain it on this dataset")
    stored = videos[0].cache.attrs
    differ = [key for key in SHARED_ATTRS if stored.get(key) != saved["store"].get(key)]
    if differ:
        raise InputError(f"{model_path}: trained on a cache with other {', '.join(differ)} than "
                         f"{videos[0].cache.path}; retrain it or point it at its own cache")
    if features and not net.tokens:
        raise InputError(f"{model_path}: method {net.method} computes no features of its own (its inputs are the "
                         "cache's); only a method that tunes the backbone (partial) writes them")
    identity = f"sha256:{sha256(model_path)[:16]}" if features else None
    results = {}
    for video in progress(videos, desc=f"infer {saved['settings']['method']}", unit="video"):
        results[video.name] = detect(net, video, classes, device)
        if classifier:
            results[video.name] = external.fuse(results[video.name], video_scores[video.name], labels,
                                                classifier["top_k"], classifier["combine"])
        if features:
            write_features(net, video, features, identity)
    if features:
        write_index(annotations, features, f"{Path(features)}.json", [subset])
    write_results(out, results)
    return sum(map(len, results.values()))
