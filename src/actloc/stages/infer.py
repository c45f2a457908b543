"""Infer stage: a trained method over every test video, detections in seconds.

Output is ActivityNet result JSON: {"results": {video: [{label, score, segment}]}}, each
video's segments best first and clipped to [0, duration].
"""

import logging

import torch
from tqdm import tqdm

from ..engine.device import resolve_device
from ..io import InputError, write_json
from ..methods import detector
from ..store import windows
from ..store.snippets import steps_to_seconds
from ..store.stores import SHARED_ATTRS

log = logging.getLogger(__name__)


@torch.no_grad()
def detect(net, video, classes, device):
    """One video's detections as ActivityNet result entries."""
    batch = windows.to_device(windows.collate([video], [(0, video.length)], net.reads, net.head.max_stride), device)
    (segments, scores, labels), = net.head.detect(net(batch), batch["lengths"])
    seconds = steps_to_seconds(segments, video.cache.attrs).clip(0, video.duration)
    return [{"label": classes[label], "score": round(float(score), 6),
             "segment": [round(float(start), 3), round(float(end), 3)]}
            for (start, end), score, label in zip(seconds, scores, labels) if end > start]


def run(model_path, index, annotations, subset, out, device="auto"):
    """The `actloc infer` command: write detections.json, return how many segments it holds."""
    device = resolve_device(device)
    net, saved = detector.load(model_path, device)
    videos, classes = windows.load(index, annotations, subset)
    if classes != saved["classes"]:
        raise InputError(f"{model_path}: trained on classes {saved['classes'][:5]}..., {annotations} has "
                         f"{classes[:5]}...; retrain it on this dataset")
    stored = videos[0].cache.attrs
    differ = [key for key in SHARED_ATTRS if stored.get(key) != saved["store"].get(key)]
    if differ:
        raise InputError(f"{model_path}: trained on a cache with other {', '.join(differ)} than "
                         f"{videos[0].cache.path}; retrain it or point it at its own cache")
    results = {video.name: detect(net, video, classes, device)
               for video in tqdm(videos, desc=f"infer {saved['settings']['method']}", unit="video")}
    write_json(out, {"version": "actloc", "results": results, "external_data": {}})
    return sum(map(len, results.values()))
