"""Cache stage: the frozen backbone runs once over every snippet of a decoded video into its
Zarr store (store.stores); the index gathers a dataset's stores; imported features (published
per-video arrays) become stores too. Stores already complete with the same settings are kept.
"""

import contextlib
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from .. import backbones
from ..engine.ahead import ahead
from ..engine.device import resolve_device
from ..io import InputError, atomic_path, dataset_videos, read_json
from ..media import info_path, iter_frames, probe, source_record
from ..progress import progress
from ..store.features import feature_key, feature_sources
from ..store.snippets import snippet_batches, snippet_count
from ..store.stores import StoreWriter, array_shapes, open_cache, write_index, write_store

log = logging.getLogger(__name__)


def protocol_attrs(settings):
    """What every store built by the backbone `settings` describes records, whatever the video:
    its family and tubelet among them, which readers of its temporal tokens need."""
    return {"backbone": settings["name"], "family": settings["family"], "tubelet": settings["tubelet"],
            "identity": settings["identity"], "layers": settings["layers"],
            "pixels": settings["pixels"], "temporal": settings["temporal"], "precision": settings["precision"],
            "block_tokens": settings.get("block_tokens")}


def expected_attrs(settings, snippet_frames, stride, video):
    """What the store of `video` built by the backbone `settings` describes records: a store that
    holds all of it is that video's, done. `decoded` says which decoded video it is: its
    source's record (path, size, modification time) and frame count, as the decode stage wrote
    them, or the file's own size and time for a video decoded elsewhere."""
    fps, frames, decoded = decoded_info(video)
    return {**protocol_attrs(settings), "snippet_frames": snippet_frames, "stride": stride, "fps": fps,
            "snippets": snippet_count(frames, snippet_frames, stride), "decoded": decoded}


def done(out, expect):
    """The store `out` if it is complete with the attributes `expect`, else None."""
    try:
        return open_cache(out, expect)
    except InputError:
        return None


def pooled_grid(tokens, grid):
    """Tokens (B, t, h*w, C) of a square h x w map averaged to (B, t, grid*grid, C)."""
    batch, steps, count, channels = tokens.shape
    side = math.isqrt(count)
    maps = tokens.reshape(batch * steps, side, side, channels).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(maps, grid)
    return pooled.flatten(2).transpose(1, 2).reshape(batch, steps, grid * grid, channels)


def clip_stream(videos, pixels, snippet_frames, stride, batch, threads=None):
    """Batches of clips of one video after another, each video's followed by None: decoded in
    one stream, so that the next video's first frames are ready when the current one ends."""
    for video in videos:
        yield from snippet_batches(iter_frames(video, size=pixels, threads=threads), snippet_frames, stride,
                                   batch)
        yield None


def decoded_info(video):
    """fps, frame count and identity of a decoded video. The decode stage's JSON holds the exact
    rate it asked ffmpeg for (the container's may be rounded); a video decoded elsewhere is probed."""
    sidecar = info_path(video)
    if sidecar.is_file():
        info = read_json(sidecar)
        return info["fps"], info["frames"], {"source": info["source"], "frames": info["frames"]}
    probed = probe(video)
    return probed["fps"], probed["frames"], source_record(video)


def build_all(videos, outs, settings, snippet_frames=16, stride=4, batch=8, device="auto", threads=None,
              on_written=None):
    """Run the backbone described by `settings` (the JSON of `actloc backbone`) over each decoded
    video into its store (`outs`, in the same order), loading the backbone once. A store already
    complete with these settings is kept. Returns ({video path: the store's attributes}, in the
    order given, and the stores written). `threads`: ffmpeg's, decoding the videos; `on_written`
    is called with each store as soon as it is complete."""
    videos, outs = [Path(v) for v in videos], [Path(o) for o in outs]
    expect, attrs, todo = {}, {}, []
    for video, out in zip(videos, outs):
        expect[video] = expected_attrs(settings, snippet_frames, stride, video)
        store = done(out, expect[video])
        if store:
            attrs[video] = store.attrs
        else:
            todo.append((video, out))
    if not todo:
        return attrs, []
    checkpoint = settings["checkpoint"]
    if checkpoint and Path(checkpoint).stat().st_size != settings["size_bytes"]:
        raise InputError(f"{checkpoint}: changed since its identity was recorded; rebuild the backbone JSON")
    model, _ = backbones.load(settings)
    device = resolve_device(device)
    model.to(device)
    layers, pixels, block_tokens = settings["layers"], settings["pixels"], settings.get("block_tokens")
    steps = snippet_frames // model.preset.tubelet
    tokens = steps if settings["temporal"] else 0
    run = sorted(set(layers) | ({block_tokens["block"]} if block_tokens else set()))
    grid = block_tokens and block_tokens["grid"]
    shapes = array_shapes(len(layers), model.preset.width, tokens, grid and (steps, grid * grid))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings["precision"] == "bf16")
    total = sum(expect[video]["snippets"] for video, _ in todo)
    stream = ahead(clip_stream([video for video, _ in todo], pixels, snippet_frames, stride, batch, threads))
    desc = todo[0][0].name if len(todo) == 1 else f"{len(todo)} videos"
    with contextlib.closing(stream), progress(total=total, unit="clip", desc=desc) as bar, torch.inference_mode():
        for video, out in todo:
            bar.set_postfix_str(video.name, refresh=False)
            with atomic_path(out) as tmp:
                writer = StoreWriter(zarr.open_group(tmp, mode="w"), video, layers, shapes, expect[video]["snippets"])
                for clips in stream:
                    if clips is None:
                        break
                    with autocast:
                        taps = dict(zip(run, model(torch.from_numpy(clips).to(device, non_blocking=True), run)))
                        rows = {"pooled": torch.stack([model.pool(taps[layer], layer) for layer in layers])}
                        if tokens:
                            rows["temporal"] = torch.stack([model.pool(taps[layer], layer, temporal=True)
                                                            for layer in layers])
                        if grid:
                            rows["block_tokens"] = pooled_grid(taps[block_tokens["block"]], grid)[None]
                    writer.append({k: v.float().cpu().numpy() for k, v in rows.items()})
                    bar.update(len(clips))
                attrs[video] = writer.finish(preset=settings["preset"], video=video.stem,
                                             **{k: v for k, v in expect[video].items() if k not in writer.KNOWN})
            if on_written:  # each store's record with it: a killed chunk's finished stores keep theirs
                on_written([out])
    return {video: attrs[video] for video in videos}, [out for _, out in todo]


def build(video, out, settings, snippet_frames=16, stride=4, batch=8, device="auto"):
    """One video's store (see `build_all`); returns its attributes."""
    attrs, _ = build_all([video], [out], settings, snippet_frames, stride, batch, device)
    return attrs[Path(video)]


# Where the features' steps are checked against their videos' durations, the share of videos
# that may disagree (a few published videos are cut short) before the protocol is called wrong.
DISAGREEING = 0.5
FEATURE_KEYS = "fps, frames and stride of the dataset's features entry (--fps, --snippet-frames, --stride)"


def check_feature_shapes(source, shapes, database, snippet_frames, stride, fps=None):
    """Check every video's features (`shapes`: {video: (steps, channels)}) before any is written:
    2-D, one channel count, and as many steps as its duration gives at `fps` (each video's own
    if None) under the snippet protocol. A few videos off are warnings; most of them off means
    the protocol is wrong: one error saying which ratio was found. Returns {video: its fps}."""
    channels, fps_of, off = None, {}, []
    for video, shape in shapes.items():
        where = f"{source}: {video}"
        if len(shape) != 2 or not shape[0]:
            raise InputError(f"{where}: features of shape {shape}, expected (snippets, channels)")
        if channels is None:
            channels = shape[1]
        elif shape[1] != channels:
            raise InputError(f"{where}: {shape[1]} channels, the videos before it have {channels}")
        fps_of[video] = fps or database[video].get("fps")
        if not fps_of[video]:
            raise InputError(f"{where}: the annotations give no fps for it; give the features' ({FEATURE_KEYS})")
        expected = snippet_count(round(database[video]["duration"] * fps_of[video]), snippet_frames, stride)
        if abs(shape[0] - expected) > max(2, 0.05 * expected):
            off.append((video, shape[0], expected))
    for video, steps, expected in off:
        log.warning("%s: %s has %d steps, but %.1f s at %g fps, %d frames, stride %d gives %d", source, video, steps,
                    database[video]["duration"], fps_of[video], snippet_frames, stride, expected)
    if shapes and len(off) > DISAGREEING * len(shapes):
        ratio = float(np.median([steps / expected for _, steps, expected in off]))
        video, steps, expected = off[0]
        raise InputError(f"{source}: {len(off)} of {len(shapes)} videos have other step counts than their durations "
                         f"give at {fps or 'their own'} fps, {snippet_frames} frames, stride {stride} (e.g. {video}: "
                         f"{steps}, not {expected}; {ratio:.2f} times as many steps, as stride {stride / ratio:.3g} "
                         f"would give): set the {FEATURE_KEYS}")
    return fps_of


def import_features(source, annotations, out_dir, index, name, snippet_frames=16, stride=4, fps=None,
                    missing="error", subsets=None):
    """Write published per-video features (T x C) as caches holding one layer (-1), so that a
    head can be trained without videos. Videos are matched by name or by file stem."""
    database = dataset_videos(annotations, subsets)
    sources = feature_sources(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the stage's output, even if every video is skipped
    found, absent = {}, []
    for video, entry in database.items():
        key = feature_key(video, entry, sources)
        if key is None:
            absent.append(video)
        else:
            found[video] = key
    if absent:
        log.warning("%s: no features for %d video(s): %s", source, len(absent), ", ".join(absent))
        if missing == "error":
            raise InputError(f"{source}: no features for {len(absent)} of {len(database)} videos, e.g. "
                             f"{', '.join(absent[:10])} (all listed above; set missing: skip in the dataset's "
                             "config entry, or --missing skip, to go on without them)")
    fps_of = check_feature_shapes(source, {video: sources[key].shape for video, key in found.items()}, database,
                                  snippet_frames, stride, fps)
    for video, key in progress(found.items(), unit="video", desc="import"):
        features = np.asarray(sources[key].read())
        write_store(out_dir / f"{video}.zarr", f"{source}: {key}", [-1], np.asarray(features, np.float32)[None],
                    backbone=name, preset="imported", identity=f"imported:{Path(source).name}",
                    snippet_frames=snippet_frames, stride=stride, fps=fps_of[video], pixels=None,
                    precision=str(features.dtype), video=video, source_key=key)
    return write_index(annotations, out_dir, index, subsets, allow_missing=True)

