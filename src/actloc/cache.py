"""Cache stage: the frozen backbone runs once over every snippet of a video; training reads Zarr.

A store `{video}.zarr` holds, for its tapped layers (attribute `layers`, 1-based blocks; -1 for
imported features, whose source layer is unknown):

- `pooled`   (layers, T, C) float16: each snippet's tokens averaged over space and time;
- `temporal` (layers, T, t, C) float16, when configured: averaged over space only, one vector
  per tubelet step (t = snippet frames / 2).

Snippet i covers frames [i * stride, i * stride + frames) of the decoded video and is centred at
(i * stride + frames / 2) / fps seconds; the last one is padded by repeating the last frame.
Arrays are chunked along T and written a shard at a time, so memory stays bounded whatever the
video's length. The store is written under a temporary name and renamed once complete.
"""

import contextlib
import logging
import math
import queue
import threading
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm
from zarr.codecs import BloscCodec

from . import backbone, decode
from .io import InputError, atomic_path, dataset_videos, read_json, video_paths, write_json

log = logging.getLogger(__name__)

FORMAT = 1  # the `actloc_cache` attribute: bumped when the layout changes
CHUNK = 256  # snippets per chunk
SHARD = 1024  # snippets per shard file: few files per video, bounded write buffer
COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
# Recorded on every store and compared by `open_cache(expect=...)`.
REQUIRED_ATTRS = ("backbone", "preset", "identity", "layers", "snippet_frames", "stride", "fps", "pixels",
                  "snippets", "channels", "temporal", "precision", "actloc_version")


def snippet_count(frames, length, stride):
    """Snippets from frame 0 every `stride` frames until one reaches the last frame."""
    return 1 + max(0, math.ceil((frames - length) / stride)) if frames > 0 else 0


def snippet_batches(frames, length, stride, batch):
    """Group a stream of frames into uint8 arrays (n <= batch, length, H, W, 3) of consecutive
    snippets, the last snippet padded with the last frame. Holds one batch of frames at a time."""
    if not 0 < stride <= length:
        raise ValueError(f"stride must be within 1..{length} (the snippet length), got {stride}")
    need = (batch - 1) * stride + length  # frames that `batch` consecutive snippets span
    buffer, read, emitted = [], 0, 0
    for frame in frames:
        buffer.append(frame)
        read += 1
        if len(buffer) == need:
            yield _stack(buffer, batch, length, stride)
            emitted += batch
            del buffer[:batch * stride]
    remaining = snippet_count(read, length, stride) - emitted
    while remaining > 0:
        count = min(remaining, batch)
        span = (count - 1) * stride + length
        yield _stack(buffer + buffer[-1:] * (span - len(buffer)), count, length, stride)
        del buffer[:count * stride]
        remaining -= count


def prefetched(items, depth=2):
    """Iterate the generator `items` from a background thread, up to `depth` ahead, so that decoding and
    snippet assembly overlap the forward pass. Errors surface in the caller; stopping early
    closes `items` (and so the decoder behind it)."""
    slots, stop, done = queue.Queue(depth), threading.Event(), object()

    def put(item):
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(done)
        except BaseException as err:  # handed to the caller, raised there
            put(err)
        finally:
            items.close()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _stack(frames, count, length, stride):
    index = np.arange(count)[:, None] * stride + np.arange(length)
    return np.stack(frames[:(count - 1) * stride + length])[index]


class StoreWriter:
    """Appends snippets' activations to a new store's arrays, one full shard per write, then
    records the attributes. `source` names the input in errors."""

    KNOWN = ("layers", "snippets", "channels", "temporal")  # attributes the writer records itself

    def __init__(self, group, source, layers, channels, tokens, expected):
        self.group, self.source, self.layers, self.channels, self.tokens = group, source, layers, channels, tokens
        self.arrays, self.buffers = {}, {}
        for name, shape in (("pooled", (channels,)), ("temporal", (tokens, channels))):
            if name == "temporal" and not tokens:
                continue
            self.arrays[name] = group.create_array(
                name, shape=(len(layers), max(expected, 1), *shape), dtype="float16",
                chunks=(1, CHUNK, *shape), shards=(len(layers), SHARD, *shape),
                compressors=COMPRESSOR, fill_value=np.nan)  # a missing chunk reads as NaN, never as data
            self.buffers[name] = np.empty((len(layers), SHARD, *shape), np.float16)
        self.written = self.filled = 0

    def append(self, rows):
        """rows: {'pooled': (layers, n, C), 'temporal': (layers, n, t, C)} as float arrays."""
        n, offset = next(iter(rows.values())).shape[1], 0
        while offset < n:
            take = min(n - offset, SHARD - self.filled)
            for name, buffer in self.buffers.items():
                values = rows[name][:, offset:offset + take]
                if not np.isfinite(values).all():
                    raise InputError(f"{self.source}: {name} activations are not finite (overflow in the backbone?)")
                buffer[:, self.filled:self.filled + take] = values
            self.filled += take
            offset += take
            if self.filled == SHARD:
                self.flush()

    def flush(self):
        stop = self.written + self.filled
        for name, array in self.arrays.items():
            if stop > array.shape[1]:
                array.resize((array.shape[0], stop, *array.shape[2:]))
            array[:, self.written:stop] = self.buffers[name][:, :self.filled]
        self.written, self.filled = stop, 0

    def finish(self, **attrs):
        """Write what is buffered, trim the arrays to the rows written, and record `attrs` with
        what the writer knows (layers, snippets, channels, temporal, format and version)."""
        self.flush()
        if not self.written:
            raise InputError(f"{self.source}: no frame could be read")
        for array in self.arrays.values():
            array.resize((array.shape[0], self.written, *array.shape[2:]))
        attrs = {"actloc_cache": FORMAT, **attrs, "layers": self.layers, "snippets": self.written,
                 "channels": self.channels, "temporal": bool(self.tokens), "actloc_version": version("actloc")}
        self.group.attrs.update(attrs)
        return attrs


def write_store(path, source, layers, pooled, temporal=None, **attrs):
    """A complete store from activations in memory: pooled (layers, T, C) [temporal (layers, T,
    t, C)], with `attrs` (the REQUIRED_ATTRS the writer does not know)."""
    rows = {"pooled": pooled} if temporal is None else {"pooled": pooled, "temporal": temporal}
    with atomic_path(path) as tmp:
        writer = StoreWriter(zarr.open_group(tmp, mode="w"), source, layers, pooled.shape[-1],
                             0 if temporal is None else temporal.shape[2], pooled.shape[1])
        writer.append(rows)
        return writer.finish(**attrs)


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but this machine has no CUDA device")
    return device


def expected_attrs(settings, snippet_frames, stride, video):
    """What the store of `video` built by the backbone `settings` describes records: a store that
    holds all of it is that video's, done. `decoded` says which decoded video it is: its
    source's record (path, size, modification time) and frame count, as the decode stage wrote
    them, or the file's own size and time for a video decoded elsewhere."""
    fps, frames, decoded = decoded_info(video)
    return {"backbone": settings["name"], "identity": settings["identity"], "layers": settings["layers"],
            "pixels": settings["pixels"], "temporal": settings["temporal"], "precision": settings["precision"],
            "snippet_frames": snippet_frames, "stride": stride, "fps": fps,
            "snippets": snippet_count(frames, snippet_frames, stride), "decoded": decoded}


def done(out, expect):
    """The store `out` if it is complete with the attributes `expect`, else None."""
    try:
        return open_cache(out, expect)
    except InputError:
        return None


def clip_stream(videos, pixels, snippet_frames, stride, batch, threads=None):
    """Batches of clips of one video after another, each video's followed by None: decoded in
    one stream, so that the next video's first frames are ready when the current one ends."""
    for video in videos:
        yield from snippet_batches(decode.iter_frames(video, size=pixels, threads=threads), snippet_frames, stride,
                                   batch)
        yield None


def decoded_info(video):
    """fps, frame count and identity of a decoded video. The decode stage's JSON holds the exact
    rate it asked ffmpeg for (the container's may be rounded); a video decoded elsewhere is probed."""
    sidecar = decode.info_path(video)
    if sidecar.is_file():
        info = read_json(sidecar)
        return info["fps"], info["frames"], {"source": info["source"], "frames": info["frames"]}
    probed = decode.probe(video)
    return probed["fps"], probed["frames"], decode.source_record(video)


def build_all(videos, outs, settings, snippet_frames=16, stride=4, batch=8, device="auto", threads=None):
    """Run the backbone described by `settings` (the JSON of `actloc backbone`) over each decoded
    video into its store (`outs`, in the same order), loading the backbone once. A store already
    complete with these settings is kept. Returns ({video path: the store's attributes}, in the
    order given, and the stores written). `threads`: ffmpeg's, decoding the videos."""
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
    model, _ = backbone.load(settings["preset"], checkpoint, settings["seed"])
    device = resolve_device(device)
    model.to(device)
    layers, pixels = settings["layers"], settings["pixels"]
    tokens = snippet_frames // backbone.TUBELET if settings["temporal"] else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings["precision"] == "bf16")
    total = sum(expect[video]["snippets"] for video, _ in todo)
    stream = prefetched(clip_stream([video for video, _ in todo], pixels, snippet_frames, stride, batch, threads))
    desc = todo[0][0].name if len(todo) == 1 else f"{len(todo)} videos"
    with contextlib.closing(stream), tqdm(total=total, unit="clip", desc=desc) as bar, torch.inference_mode():
        for video, out in todo:
            bar.set_postfix_str(video.name, refresh=False)
            with atomic_path(out) as tmp:
                writer = StoreWriter(zarr.open_group(tmp, mode="w"), video, layers, model.preset.width, tokens,
                                     expect[video]["snippets"])
                for clips in stream:
                    if clips is None:
                        break
                    with autocast:
                        taps = model(torch.from_numpy(clips).to(device, non_blocking=True), layers)
                        rows = {"pooled": torch.stack([model.pool(x, layer) for x, layer in zip(taps, layers)])}
                        if tokens:
                            rows["temporal"] = torch.stack([model.pool(x, layer, temporal=True)
                                                            for x, layer in zip(taps, layers)])
                    writer.append({k: v.float().cpu().numpy() for k, v in rows.items()})
                    bar.update(len(clips))
                attrs[video] = writer.finish(preset=settings["preset"], video=video.stem,
                                             **{k: v for k, v in expect[video].items() if k not in writer.KNOWN})
    return {video: attrs[video] for video in videos}, [out for _, out in todo]


def build(video, out, settings, snippet_frames=16, stride=4, batch=8, device="auto"):
    """One video's store (see `build_all`); returns its attributes."""
    attrs, _ = build_all([video], [out], settings, snippet_frames, stride, batch, device)
    return attrs[Path(video)]


class Cache:
    """One video's store, opened and checked by `open_cache`."""

    def __init__(self, path, group):
        self.path, self.group, self.attrs = path, group, dict(group.attrs)
        self.layers = list(self.attrs["layers"])
        self.snippets = self.attrs["snippets"]

    def layer_index(self, layers):
        if layers is None:
            return list(range(len(self.layers)))
        if layers == "last":
            return [len(self.layers) - 1]
        absent = [layer for layer in layers if layer not in self.layers]
        if absent:
            raise InputError(f"{self.path}: holds layers {self.layers}, not {absent}; rebuild the cache "
                             f"with those layers tapped")
        return [self.layers.index(layer) for layer in layers]

    def read(self, start=0, stop=None, layers=None, temporal=False):
        """float32 tensors {'pooled': (layers, n, C)[, 'temporal': (layers, n, t, C)]} for
        snippets [start, stop); `layers` a list of tapped layers, None for all, or 'last'."""
        stop = self.snippets if stop is None else stop
        if not 0 <= start < stop <= self.snippets:
            raise ValueError(f"{self.path}: snippets [{start}, {stop}) outside [0, {self.snippets})")
        if temporal and not self.attrs["temporal"]:
            raise InputError(f"{self.path}: has no temporal tokens; rebuild the cache with temporal: true")
        index = self.layer_index(layers)
        out = {}
        for name in ("pooled", "temporal") if temporal else ("pooled",):
            array = self.group[name]
            try:
                # One basic slice per layer: zarr's orthogonal selection is ~50x slower here.
                values = np.stack([array[layer, start:stop] for layer in index])
            except Exception as err:  # zarr and the codecs raise many types for damaged chunks
                raise InputError(f"{self.path}: {name} cannot be read ({err}); delete the store and "
                                 f"rerun the cache stage") from None
            if np.isnan(values).any():
                raise InputError(f"{self.path}: {name} has missing chunks (a truncated store); delete it "
                                 f"and rerun the cache stage")
            out[name] = torch.from_numpy(values.astype(np.float32))
        return out

    def random_window(self, max_snippets, generator=None):
        """A random [start, stop) of at most `max_snippets` snippets (the whole video if shorter)."""
        if self.snippets <= max_snippets:
            return 0, self.snippets
        start = int(torch.randint(self.snippets - max_snippets + 1, (1,), generator=generator))
        return start, start + max_snippets


def open_cache(path, expect=None):
    """Open a store and check it is a complete actloc cache whose attributes equal `expect`."""
    path = Path(path)
    rebuild = "delete it and rerun the cache stage (snakemake --forcerun cache ...)"
    if not (path / "zarr.json").is_file():
        raise InputError(f"{path}: no cache store here; build it with the cache stage")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs)
    except Exception as err:
        raise InputError(f"{path}: not a readable Zarr store ({err}); {rebuild}") from None
    if "actloc_cache" not in attrs:
        raise InputError(f"{path}: not an actloc cache (no actloc_cache attribute); {rebuild}")
    if attrs["actloc_cache"] != FORMAT:
        raise InputError(f"{path}: cache format {attrs['actloc_cache']}, this actloc reads {FORMAT}; {rebuild}")
    absent = [key for key in REQUIRED_ATTRS if key not in attrs]
    if absent:
        raise InputError(f"{path}: attribute(s) {', '.join(absent)} missing; {rebuild}")
    differ = [f"{key} is {attrs.get(key)!r}, expected {value!r}" for key, value in (expect or {}).items()
              if attrs.get(key) != value]
    if differ:
        raise InputError(f"{path}: built with other settings ({'; '.join(differ)}); {rebuild}")
    names = ["pooled", "temporal"] if attrs["temporal"] else ["pooled"]
    for name in names:
        if name not in group:
            raise InputError(f"{path}: array {name!r} missing (a truncated store); {rebuild}")
        array = group[name]
        if array.shape[:2] != (len(attrs["layers"]), attrs["snippets"]) or array.shape[-1] != attrs["channels"]:
            raise InputError(f"{path}: {name} has shape {array.shape}, its attributes say "
                             f"({len(attrs['layers'])}, {attrs['snippets']}, ..., {attrs['channels']}); {rebuild}")
        # Every shard is one file under <array>/c/; zarr reads an absent one as fill values.
        shards = math.prod(math.ceil(size / shard) for size, shard in zip(array.shape, array.shards))
        present = sum(p.is_file() for p in (path / name / "c").rglob("*"))
        if present != shards:
            raise InputError(f"{path}: {name} has {present} of its {shards} shard files (a truncated "
                             f"store); {rebuild}")
    return Cache(path, group)


def write_index(annotations, folder, out, subsets=None, expect=None, allow_missing=False):
    """Check the store of every video of a dataset (in `subsets`) and list them:
    {video: {path, snippets}}, and the videos without one."""
    paths, missing = video_paths(annotations, folder, ".zarr", subsets, allow_missing)
    stores = {video: {"path": str(path), "snippets": open_cache(path, expect).snippets}
              for video, path in paths.items()}
    write_json(out, {"stores": stores, "missing": missing})
    return stores


def feature_sources(source):
    """{name: loader} of published features: a folder of `<name>.npy` or one HDF5 file."""
    source = Path(source)
    if source.is_dir():
        return {p.stem: (lambda p=p: np.load(p, mmap_mode="r")) for p in sorted(source.glob("*.npy"))}
    if not source.is_file():
        raise InputError(f"{source}: features not found (a folder of .npy files or an HDF5 file)")
    import h5py

    try:
        with h5py.File(source, "r") as f:
            names = [name for name in f if isinstance(f[name], h5py.Dataset)]
    except OSError as err:
        raise InputError(f"{source}: not a readable HDF5 file ({err})") from None

    def reader(name):
        with h5py.File(source, "r") as f:
            return f[name][()]

    return {name: (lambda name=name: reader(name)) for name in names}


def import_features(source, annotations, out_dir, index, name, snippet_frames=16, stride=4, fps=None,
                    missing="error", subsets=None):
    """Write published per-video features (T x C) as caches holding one layer (-1), so that a
    head can be trained without videos. Videos are matched by name or by file stem."""
    database = dataset_videos(annotations, subsets)
    sources = feature_sources(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the stage's output, even if every video is skipped
    found, absent, channels = {}, [], None
    for video, entry in database.items():
        key = video if video in sources else entry.get("file") if entry.get("file") in sources else None
        if key is None:
            absent.append(video)
        else:
            found[video] = key
    if absent:
        log.warning("%s: no features for %d video(s): %s", source, len(absent), ", ".join(absent))
        if missing == "error":
            raise InputError(f"{source}: no features for {len(absent)} of {len(database)} videos, e.g. "
                             f"{', '.join(absent[:10])} (all listed above; --missing skip goes on without them)")
    for video, key in tqdm(found.items(), unit="video", desc="import"):
        features = np.asarray(sources[key]())
        where = f"{source}: {key}"
        if features.ndim != 2 or not features.shape[0]:
            raise InputError(f"{where}: features of shape {features.shape}, expected (snippets, channels)")
        if channels is None:
            channels = features.shape[1]
        elif features.shape[1] != channels:
            raise InputError(f"{where}: {features.shape[1]} channels, the videos before it have {channels}")
        video_fps = fps or database[video]["fps"]
        if not video_fps:
            raise InputError(f"{annotations}: no fps for {video}; give the features' fps (--fps)")
        expected = snippet_count(round(database[video]["duration"] * video_fps), snippet_frames, stride)
        if abs(features.shape[0] - expected) > max(2, 0.05 * expected):
            log.warning("%s: %d snippets, but %.1f s at %g fps with stride %d gives %d: check fps and stride",
                        where, features.shape[0], database[video]["duration"], video_fps, stride, expected)
        write_store(out_dir / f"{video}.zarr", where, [-1], np.asarray(features, np.float32)[None],
                    backbone=name, preset="imported", identity=f"imported:{Path(source).name}",
                    snippet_frames=snippet_frames, stride=stride, fps=video_fps, pixels=None,
                    precision=str(features.dtype), video=video, source_key=key)
    return write_index(annotations, out_dir, index, subsets, allow_missing=True)

