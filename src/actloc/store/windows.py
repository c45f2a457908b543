"""What training and inference read: each video's store and its ground truth in snippet steps,
training windows, and padded batches of them (segments are kept in steps here, see
store.snippets)."""

import logging
import math
from dataclasses import dataclass, replace

import torch

from ..classifier import ACTIONNESS
from ..io import InputError, read_annotations, read_json
from .snippets import from_grid, resampled, seconds_to_steps, steps_to_seconds, to_grid
from .stores import Cache, check_alike, open_cache

log = logging.getLogger(__name__)


@dataclass
class CachedVideo:
    name: str
    cache: Cache
    duration: float
    segments: torch.Tensor  # (G, 2) float, in steps
    labels: torch.Tensor  # (G,) int64, class indices
    steps: int | None = None  # the fixed length its features are resampled to; None: its snippets

    @property
    def length(self):
        return self.steps or self.cache.snippets

    def seconds(self, steps):
        """Steps of this video (resampled, if it is) in seconds, clipped to the video."""
        if self.steps:
            steps = from_grid(steps, self.cache.snippets, self.steps)
        return steps_to_seconds(steps, self.cache.attrs).clip(0, self.duration)


def ground_truth(actions, classes, attrs, steps=None):
    """A video's annotated actions as (segments (G, 2) in snippet steps, or in steps of its
    resampling to `steps`, labels (G,) int64)."""
    seconds = torch.tensor([a["segment"] for a in actions], dtype=torch.float64).reshape(-1, 2)
    labels = torch.tensor([classes.index(a["label"]) for a in actions], dtype=torch.int64)
    segments = seconds_to_steps(seconds, attrs)
    if steps:
        segments = to_grid(segments, attrs["snippets"], steps)
    return segments.float(), labels


def load(index_path, annotations_path, subset, steps=None, actionness=False, expect=None):
    """The cached videos of `subset` and the dataset's classes; with `steps`, each video's
    features are resampled to that many steps (the fixed-length protocol of ActivityNet); with
    `actionness`, every action is of one class, "action" (labels come from a classifier). Each
    store must record the attributes `expect` (this run's settings), else it is refused naming
    the one that differs.

    Videos the index lists as missing (imported features with `missing: skip`) are left out
    with a warning; stores built with different settings are an error.
    """
    index, dataset = read_json(index_path, ("stores",), "a cache index"), read_annotations(annotations_path)
    classes = [ACTIONNESS] if actionness else dataset["classes"]
    entries = {v: e for v, e in dataset["database"].items() if e["subset"] == subset}
    if actionness:
        entries = {v: {**e, "annotations": [{**a, "label": ACTIONNESS} for a in e["annotations"]]}
                   for v, e in entries.items()}
    skipped = sorted(set(entries) & set(index.get("missing", [])))
    if skipped:
        log.warning("%d %s videos have no cache and are left out: %s", len(skipped), subset, ", ".join(skipped[:10]))
    absent = sorted(set(entries) - set(index["stores"]) - set(skipped))
    if absent:
        raise InputError(f"{index_path}: lists no store for {len(absent)} {subset} video(s) of "
                         f"{annotations_path}, e.g. {', '.join(absent[:5])}; rerun the cache stage")
    videos, first = [], None
    for name in sorted(set(entries) - set(skipped)):
        cache = open_cache(index["stores"][name]["path"], expect)
        first = first or cache
        check_alike(cache, first)
        videos.append(CachedVideo(name, cache, entries[name]["duration"],
                                  *ground_truth(entries[name]["annotations"], classes, cache.attrs, steps), steps))
    if not videos:
        raise InputError(f"{annotations_path}: no {subset} video to work on")
    return videos, classes


def training_window(length, segments, max_length, generator, keep_fraction=0.5, tries=100):
    """A random [start, stop) of at most `max_length` of a video's `length` steps that keeps at
    least `keep_fraction` of one of its `segments` (ActionFormer's truncation); the whole video
    when it is short enough."""
    if length <= max_length:
        return 0, length
    for _ in range(tries):
        start = int(torch.randint(length - max_length + 1, (1,), generator=generator))
        stop = start + max_length
        inside = (segments[:, 1].clamp(max=stop) - segments[:, 0].clamp(min=start)).clamp(min=0)
        lengths = (segments[:, 1] - segments[:, 0]).clamp(min=1e-6)
        if (inside / lengths >= keep_fraction).any():
            break
    return start, stop


class KeptReads:
    """Whole-video reads of the stores kept in memory, float16 as stored, while they fit in
    `memory_mb`; windows are sliced from them. Training reads every video every epoch: kept,
    epochs after the first read no store (the demo's LoSA steps ~10 % faster). A video not kept
    is read a window at a time, never whole."""

    def __init__(self, memory_mb=0):
        self.room, self.kept = memory_mb * 2**20, {}

    def read(self, video, start=0, stop=None, layers=None, temporal=False, tokens=False, out=None):
        """As Cache.read (float16, into `out` when given); [start, stop) of a resampled video are
        steps of its resampling, which is float32, interpolated from the whole video."""
        if video.steps:
            whole = self.read(replace(video, steps=None), 0, None, layers, temporal, tokens)
            read = {name: resampled(x.float(), video.steps)[:, start:stop] for name, x in whole.items()}
        else:
            key = (video.name, str(layers), temporal, tokens)
            if key not in self.kept:
                cache = video.cache
                size = 2 * cache.snippets * sum(len(rows) * math.prod(cache.row_shape(name))  # float16
                                                for name, rows in cache.arrays(layers, temporal, tokens).items())
                if size > self.room:
                    return cache.read(start, stop, layers, temporal, tokens, out)
                self.kept[key] = cache.read(layers=layers, temporal=temporal, tokens=tokens)
                self.room -= size
            read = {name: x[:, start:stop] for name, x in self.kept[key].items()}
        if out is None:
            return read
        for name, x in read.items():
            out[name].copy_(x)
        return out


class BatchBuffers:
    """A ring of `slots` buffers that batches are laid out in (page-locked with `pin`, for CUDA's
    copies without blocking): reading into memory used before spares the page faults of fresh
    memory, which cost as much as the reading. A slot is made at its first use, for the larger of
    its batch and `largest` (({name: shape}, dtype): the largest batch there will be), and its
    memory touched then, so that a training's memory is what its settings say, whatever its
    videos, from its first read_ahead + 2 batches on. A batch taken is overwritten `slots`
    batches later: whoever takes them must be done with it by then (training reads `read_ahead`
    batches ahead of its step: read_ahead + 2 slots)."""

    def __init__(self, slots, largest=None, pin=False):
        self.slots, self.largest, self.pin, self.next = [{} for _ in range(slots)], largest, pin, 0

    def take(self, shapes, dtype):
        """{name: a tensor of shapes[name] and `dtype`} in the next slot (contents undefined)."""
        slot, self.next = self.slots[self.next], (self.next + 1) % len(self.slots)
        largest, largest_dtype = self.largest or ({}, None)
        out = {}
        for name, shape in shapes.items():
            size = math.prod(shape)
            if name not in slot or slot[name].numel() < size or slot[name].dtype != dtype:
                slot.pop(name, None)  # freed before its successor is made
                if dtype == largest_dtype and name in largest:
                    size = max(size, math.prod(largest[name]))
                slot[name] = torch.zeros(size, dtype=dtype, pin_memory=self.pin)
            out[name] = slot[name][:math.prod(shape)].view(shape)
        return out


def window_targets(segments, labels, start, stop):
    """A window's ground truth: the segments in its own steps, clipped to it, and their labels;
    segments left empty by the clipping are dropped."""
    segments = (segments - start).clamp(0, stop - start)
    keep = segments[:, 1] > segments[:, 0]
    return segments[keep], labels[keep]


def padded(rows, multiple):
    """Rows (L, T_i, ...) of a batch zero-padded along T to the longest, rounded up to a multiple
    of `multiple`: (B, L, T, ...) and the mask (B, T) of real steps."""
    length = -(-max(row.shape[1] for row in rows) // multiple) * multiple
    out = rows[0].new_zeros(len(rows), rows[0].shape[0], length, *rows[0].shape[2:])
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
    for i, row in enumerate(rows):
        out[i, :, :row.shape[1]] = row
        mask[i, :row.shape[1]] = True
    return out, mask


def batch_layout(video, what, size, length):
    """({array: shape}, dtype) of a batch of `size` windows of `length` steps of videos like
    `video`, reading `what`: float16 as stored, float32 for a resampled video."""
    cache = video.cache
    rows = cache.arrays(what["layers"], what["temporal"], what.get("tokens", False))
    return ({name: (size, len(leading), length, *cache.row_shape(name)) for name, leading in rows.items()},
            torch.float32 if video.steps else torch.float16)


def collate(videos, windows, what, multiple, reads=None, buffers=None):
    """A padded batch of windows, float16 as stored (float32 for resampled videos): pooled (B, L,
    T, C), temporal (B, L, T, t, C) and block_tokens (B, 1, T, t, g*g, C) or None, mask (B, T),
    the real lengths, and each window's targets (segments in its own steps, labels). `what`
    says what to read (Cache.read's layers, temporal, tokens: a Detector's `reads`). T is the
    longest window rounded up to a multiple of `multiple`. `reads` (KeptReads) reads each
    window straight into the batch, or each video's store does; `buffers` (BatchBuffers) holds
    the batch, else new memory does."""
    reads = reads or KeptReads()
    lengths = [stop - start for start, stop in windows]
    length = -(-max(lengths) // multiple) * multiple
    shapes, dtype = batch_layout(videos[0], what, len(videos), length)
    batch = buffers.take(shapes, dtype) if buffers else {name: torch.empty(shape, dtype=dtype)
                                                          for name, shape in shapes.items()}
    for i, (video, (start, stop)) in enumerate(zip(videos, windows)):
        reads.read(video, start, stop, **what, out={name: x[i, :, :stop - start] for name, x in batch.items()})
        for x in batch.values():
            x[i, :, stop - start:] = 0
    mask = torch.arange(length) < torch.tensor(lengths)[:, None]
    return {"pooled": batch["pooled"], "temporal": batch.get("temporal"), "block_tokens": batch.get("block_tokens"),
            "mask": mask, "lengths": lengths,
            "targets": [window_targets(v.segments, v.labels, start, stop) for v, (start, stop) in zip(videos, windows)]}


def to_device(batch, device):
    """The batch on `device`, copied without blocking from pinned memory (see BatchBuffers); its
    activations stay float16 as stored (the detector takes them to float32 there)."""
    moved = {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
             for key, value in batch.items()}
    moved["targets"] = [(s.to(device, non_blocking=True), lab.to(device, non_blocking=True))
                        for s, lab in batch["targets"]]
    return moved
