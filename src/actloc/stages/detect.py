"""Detect stage: a trained model applied to videos outside any dataset. Each video is decoded
with the decode settings the model's dataset used, cached with the very backbone its cache was
built with (found from the model, or given, and checked by identity), and run through the method
as `actloc infer` runs it; per video, its detections as JSON (ActivityNet result form) and CSV,
and a timeline PNG. Decoded videos and stores go to a cache folder that a rerun reuses.
"""

import logging
from pathlib import Path

import pandas as pd
import torch

from .. import classifier as external
from ..engine.device import resolve_device
from ..io import InputError, read_json, remove, video_files, write_text
from ..methods import detector
from ..progress import progress
from ..store.stores import open_cache
from ..store.windows import CachedVideo
from . import plots
from .backbone import read_description
from .cache import build_all, protocol_attrs
from .decode import normalize_all
from .infer import detect as detect_video, write_results

log = logging.getLogger(__name__)


def decode_settings(model_path, saved, fps=None, short_side=None):
    """(fps, short side) the model's videos were decoded at: recorded in the model, or given."""
    if saved["store"].get("preset") == "imported":
        raise InputError(f"{model_path}: trained on imported features ({saved['store']['backbone']}), which no "
                         "backbone here computes from a video: detect needs a model trained on a backbone's cache")
    recorded = saved["settings"].get("decode") or {}
    fps, short_side = fps or recorded.get("fps"), short_side or recorded.get("short_side")
    if not (fps and short_side):
        raise InputError(f"{model_path}: records no decode settings (trained before models recorded them): give "
                         "--fps and --short-side, the decode settings of the dataset it was trained on")
    return fps, short_side


def relative_to_project(path, description):
    """`path` as written in a backbone JSON (relative to the workflow's folder), found from any
    folder: as given, else beside the results/ folder that holds the JSON."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    for folder in Path(description).resolve().parents:
        if folder.name == "results" and (folder.parent / path).exists():
            return folder.parent / path
    return path


def find_backbone(model_path, saved, given=None):
    """The description (`actloc backbone`'s JSON) of the backbone that built the model's cache:
    `given`, else the one beside the model (a LoFi model's tuned backbone) or in the results'
    backbones/ folder; refused unless its identity and taps are the model's cache's."""
    store, model_path = saved["store"], Path(model_path)
    candidates = [Path(given)] if given else [model_path.parent / "backbone.json",
                                              model_path.parent.parent.parent / "backbones" / f"{store['backbone']}.json"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise InputError(f"{model_path}: trained on backbone {store['backbone']} ({store['identity']}), whose JSON "
                         f"is not at {' or '.join(map(str, candidates))}: give it with --backbone")
    settings = read_description(path)
    # A model records what its cache's stores shared (SHARED_ATTRS): those of earlier versions, fewer.
    differ = [f"{key} {value!r} (the model's cache: {store[key]!r})" for key, value in protocol_attrs(settings).items()
              if key != "precision" and key in store and value != store[key]]
    if differ:
        raise InputError(f"{path}: not the backbone {model_path} was trained on: {'; '.join(differ)}; give that "
                         "one with --backbone")
    if settings["checkpoint"]:
        settings["checkpoint"] = str(relative_to_project(settings["checkpoint"], path))
    return settings


def thresholded(detections, top_k=None, min_score=None):
    """The best `top_k` detections scoring at least `min_score` (both optional), best first."""
    kept = [d for d in sorted(detections, key=lambda d: -d["score"]) if min_score is None or d["score"] >= min_score]
    return kept[:top_k] if top_k else kept


def write_outputs(out_dir, name, detections, duration):
    """<name>.json (ActivityNet result form), <name>.csv and <name>.png in `out_dir`."""
    out_dir = Path(out_dir)
    write_results(out_dir / f"{name}.json", {name: detections})
    rows = [(d["segment"][0], d["segment"][1], d["label"], d["score"]) for d in detections]
    write_text(out_dir / f"{name}.csv", pd.DataFrame(rows, columns=["start", "end", "label", "score"])
               .to_csv(index=False))
    plots.video_timeline(name, detections, duration, out_dir / f"{name}.png")
    return [out_dir / f"{name}{suffix}" for suffix in (".json", ".csv", ".png")]


def run(sources, model_path, out_dir, backbone=None, cache_dir=None, keep_cache=True, top_k=None, min_score=None,
        classifier=None, device="auto", threads=None, batch=8, fps=None, short_side=None, damage="error"):
    """The `actloc detect` command. Returns ({video: its detections}, {source: why it failed},
    the paths written). A video that cannot be decoded is one error line; the others go on."""
    device = resolve_device(device)
    files = video_files(sources)
    net, saved = detector.load(model_path, device)
    trained = saved["settings"]["train"]
    if trained.get("actionness") and not classifier:
        raise InputError(f"{model_path}: trained for actionness: give the video-level classifier that labels its "
                         "proposals (--classifier)")
    if classifier and not trained.get("actionness"):
        raise InputError(f"{model_path}: trained on classes, it takes no --classifier")
    fps, short_side = decode_settings(model_path, saved, fps, short_side)
    settings = find_backbone(model_path, saved, backbone)
    store = saved["store"]
    cache_dir = Path(cache_dir or Path(out_dir) / "cache")
    decoded, failed, infos = {}, {}, {}
    for file in progress(files, desc="decode", unit="video", disable=len(files) < 2):
        try:  # a video decoded before from the same bytes at these settings is kept
            infos.update(normalize_all([file.stem], [file], cache_dir / "videos", fps, short_side, threads, damage)[0])
            decoded[file.stem] = cache_dir / "videos" / f"{file.stem}.mp4"
        except InputError as err:
            failed[str(file)] = str(err)
            log.error("%s", err)
    stores = {name: cache_dir / "stores" / f"{name}.zarr" for name in decoded}
    if decoded:
        build_all(list(decoded.values()), list(stores.values()), settings, store["snippet_frames"], store["stride"],
                  batch, device, threads)
    labels = saved["classes"]
    if classifier:
        labels = external.class_names(classifier["path"])
        video_scores = external.load(classifier["path"], list(decoded), labels)
    results, written = {}, []
    for name in progress(list(decoded), desc="detect", unit="video", disable=len(decoded) < 2):
        info = infos[name]
        duration = info["frames"] / info["fps"]
        video = CachedVideo(name, open_cache(stores[name]), duration, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long),
                            trained.get("fixed_steps"))
        found = detect_video(net, video, saved["classes"], device)
        if classifier:
            found = external.fuse(found, video_scores[name], labels, classifier["top_k"], classifier["combine"])
        results[name] = thresholded(found, top_k, min_score)
        written += write_outputs(out_dir, name, results[name], duration)
    if not keep_cache:
        for path in [*decoded.values(), *(p.with_suffix(".json") for p in decoded.values()), *stores.values()]:
            remove(path)
    return results, failed, written


def merge(manifests, out):
    """One detections.json (ActivityNet result form) of the per-video JSONs that detect chunks'
    `manifests` list; returns how many videos it holds."""
    results = {}
    for manifest in manifests:
        for video, path in read_json(manifest).items():
            results[video] = read_json(path, ("results",), "a detections JSON written by actloc detect")["results"][video]
    write_results(out, dict(sorted(results.items())))
    return len(results)
