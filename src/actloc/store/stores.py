"""A video's Zarr store: what the cache stage writes and training reads.

A store `{video}.zarr` holds, for its tapped layers (attribute `layers`, 1-based blocks; -1 for
imported features, whose source layer is unknown):

- `pooled`   (layers, T, C) float16: each snippet's tokens averaged over space and time;
- `temporal` (layers, T, t, C) float16, when configured: averaged over space only, one vector
  per tubelet step (t = snippet frames / the backbone's tubelet, attribute `tubelet`);
- `block_tokens` (1, T, t, g*g, C) float16, when configured (attribute `block_tokens`: block k,
  grid g): the tokens leaving block k, averaged over space to a g x g grid per tubelet step,
  which the partial method runs the blocks above k on;
- `moments_pooled`, `moments_temporal` (2, layers, C) float64: the sum and the sum of squares
  of each layer's channels over what the store holds (attribute `moments`: their counts), which
  training combines into its input standardisation without reading the activations.

Arrays are chunked along T and written a shard at a time, so memory stays bounded whatever the
video's length. The store is written under a temporary name and renamed once complete.
"""

import math
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.buffer.cpu import NDBuffer

from ..io import InputError, atomic_path, first_line, video_paths, write_json

# The `actloc_cache` attribute, bumped when the layout changes: 2 adds a checksum to every chunk;
# 3 stores chunks uncompressed, up to 1,024 snippets long, and records the moments. Formats 1 and 2
# are still read (training then reads their activations to fit its standardisation).
FORMAT = 3
READABLE_FORMATS = (1, 2, 3)

# Snippets a chunk holds at most; a shard file holds one chunk of each layer. Long chunks make
# few, large reads: a whole THUMOS video in one to four reads per layer (docs/performance.md).
CHUNK = 1024
ALIGN = 16


def chunk_length(snippets):
    """Snippets a chunk of a store of `snippets` holds: at most CHUNK, the video cut into chunks
    as even as ALIGN allows, since an uncompressed chunk stores its unused rows too (under ALIGN
    a video are)."""
    snippets = max(snippets, 1)
    return min(CHUNK, -(-math.ceil(snippets / math.ceil(snippets / CHUNK)) // ALIGN) * ALIGN)


# A chunk's bytes at most: zarr holds a chunk's bytes while it reads it, and malloc reuses
# blocks under 32 MB from read to read (above, fresh pages fault in at half the read's speed).
CHUNK_BYTES = 24 * 2**20


def inner_chunk(length, row_bytes):
    """Rows of a chunk in a shard of `length` rows: the most that divide it in multiples of ALIGN
    and stay within CHUNK_BYTES: the whole shard for pooled and temporal taps (ViT-g: 23 MB),
    fewer for block tokens (ViT-g at grid 4: 360 KB a snippet, chunks of 64)."""
    fits = [rows for rows in range(ALIGN, length + 1, ALIGN) if length % rows == 0 and rows * row_bytes <= CHUNK_BYTES]
    return max(fits, default=length if length % ALIGN else ALIGN)


# No compression: the codecs read at 0.4-0.73x its speed, for 56-100 % of the bytes
# (benchmarks/store_format.py), and training is bound by its reads. A CRC-32C of each chunk,
# checked on every read, makes a flipped byte an error, never values.
CODECS = (Crc32cCodec(),)

ADVISE_BYTES = 128 * 1024  # a posix_fadvise call's range (Cache.advise)

# Which arrays' per-channel moments a store records (the inputs a standardisation is fitted on).
MOMENTS = ("pooled", "temporal")


# Recorded on every store and compared by `open_cache(expect=...)`.
REQUIRED_ATTRS = ("backbone", "preset", "identity", "layers", "snippet_frames", "stride", "fps", "pixels",
                  "snippets", "channels", "temporal", "precision", "actloc_version")


def moments(x, rows=256):
    """(count, sum (L, C), sum of squares (L, C)) in float64 of activations x (L, n, [t,] C),
    over everything but the layer and the channel. Converted `rows` rows at a time into one
    reused buffer: a fresh float64 copy of a ViT-g shard (page faults) made it ~8x slower."""
    x = torch.as_tensor(x)
    channels = x.shape[-1]
    buffer = torch.empty(rows, channels, dtype=torch.float64)
    total = torch.zeros(x.shape[0], channels, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for layer, values in enumerate(x):
        for piece in values.reshape(-1, channels).split(rows):
            converted = buffer[:len(piece)].copy_(piece)
            total[layer] += converted.sum(0)
            squares[layer] += converted.square_().sum(0)
    return x[0].numel() // channels, total, squares


def combine(parts):
    """The moments of several parts (see `moments`) as those of their union."""
    counts, sums, squares = zip(*parts)
    return sum(counts), sum(sums), sum(squares)


def array_shapes(n_layers, channels, tokens=0, block_tokens=None):
    """{array: (leading size, shape of a snippet's row)} of a store: `tokens` temporal tokens a
    snippet (0: no temporal array), `block_tokens` (t, g*g) or None."""
    shapes = {"pooled": (n_layers, (channels,))}
    if tokens:
        shapes["temporal"] = (n_layers, (tokens, channels))
    if block_tokens:
        shapes["block_tokens"] = (1, (*block_tokens, channels))
    return shapes


class StoreWriter:
    """Appends snippets' activations to a new store's arrays (`shapes`, see array_shapes), one
    full shard per write, then records the attributes. `source` names the input in errors."""

    KNOWN = ("layers", "snippets", "channels", "temporal", "moments")  # attributes the writer records itself

    def __init__(self, group, source, layers, shapes, expected):
        self.group, self.source, self.layers = group, source, layers
        self.channels, self.temporal = shapes["pooled"][1][-1], "temporal" in shapes
        self.shard = chunk_length(expected)
        self.arrays, self.buffers, self.moments = {}, {}, {}
        for name, (lead, shape) in shapes.items():
            self.arrays[name] = group.create_array(
                name, shape=(lead, max(expected, 1), *shape), dtype="float16",
                chunks=(1, inner_chunk(self.shard, 2 * math.prod(shape)), *shape), shards=(lead, self.shard, *shape),
                compressors=CODECS, fill_value=np.nan)  # a missing chunk reads as NaN, never as data
            self.buffers[name] = np.empty((lead, self.shard, *shape), np.float16)
        self.written = self.filled = 0

    def append(self, rows):
        """rows: {'pooled': (layers, n, C), 'temporal': (layers, n, t, C), ...} as float arrays."""
        n, offset = next(iter(rows.values())).shape[1], 0
        while offset < n:
            take = min(n - offset, self.shard - self.filled)
            for name, buffer in self.buffers.items():
                values = rows[name][:, offset:offset + take]
                if not np.isfinite(values).all():
                    raise InputError(f"{self.source}: {name} activations are not finite (overflow in the backbone?)")
                buffer[:, self.filled:self.filled + take] = values
            self.filled += take
            offset += take
            if self.filled == self.shard:
                self.flush()

    def flush(self):
        stop = self.written + self.filled
        for name, array in self.arrays.items():
            if stop > array.shape[1]:
                array.resize((array.shape[0], stop, *array.shape[2:]))
            rows = self.buffers[name][:, :self.filled]
            array[:, self.written:stop] = rows
            if name in MOMENTS and self.filled:  # of the float16 values stored, as training reads them
                self.moments[name] = combine([self.moments[name], moments(rows)]) if name in self.moments \
                    else moments(rows)
        self.written, self.filled = stop, 0

    def finish(self, **attrs):
        """Write what is buffered, trim the arrays to the rows written, and record `attrs` with
        what the writer knows (layers, snippets, channels, temporal, format and version)."""
        self.flush()
        if not self.written:
            raise InputError(f"{self.source}: no frame could be read")
        for array in self.arrays.values():
            array.resize((array.shape[0], self.written, *array.shape[2:]))
        for name, (count, total, squares) in self.moments.items():
            self.group.create_array(f"moments_{name}", data=torch.stack([total, squares]).numpy(), compressors=CODECS)
        attrs = {"actloc_cache": FORMAT, **attrs, "layers": self.layers, "snippets": self.written,
                 "channels": self.channels, "temporal": self.temporal,
                 "moments": {name: count for name, (count, _, _) in self.moments.items()},
                 "actloc_version": version("actloc")}
        self.group.attrs.update(attrs)
        return attrs


def write_store(path, source, layers, pooled, temporal=None, **attrs):
    """A complete store from activations in memory: pooled (layers, T, C) [temporal (layers, T,
    t, C)], with `attrs` (the REQUIRED_ATTRS the writer does not know)."""
    rows = {"pooled": pooled} if temporal is None else {"pooled": pooled, "temporal": temporal}
    shapes = array_shapes(len(layers), pooled.shape[-1], 0 if temporal is None else temporal.shape[2])
    with atomic_path(path) as tmp:
        writer = StoreWriter(zarr.open_group(tmp, mode="w"), source, layers, shapes, pooled.shape[1])
        writer.append(rows)
        return writer.finish(**attrs)


# What all stores of one index, training or model share: one backbone, its taps, the snippet protocol.
SHARED_ATTRS = ("backbone", "family", "tubelet", "preset", "identity", "layers", "pixels", "temporal", "channels",
                "snippet_frames", "stride", "block_tokens")


def check_alike(cache, first):
    """InputError naming `cache` unless it shares SHARED_ATTRS with `first`, another store of
    the same index: one store of another backbone or protocol among them would train on
    features unlike the others."""
    differ = [f"{key} {cache.attrs.get(key)!r} where {first.path.name} has {first.attrs.get(key)!r}"
              for key in SHARED_ATTRS if cache.attrs.get(key) != first.attrs.get(key)]
    if differ:
        raise InputError(f"{cache.path}: not built as the other stores ({'; '.join(differ)}); stores used "
                         "together are of one backbone and snippet protocol: delete the odd one and rerun "
                         "the cache stage")


class Cache:
    """One video's store, opened and checked by `open_cache`."""

    def __init__(self, path, group):
        self.path, self.group, self.attrs = path, group, dict(group.attrs)
        self.layers = list(self.attrs["layers"])
        self.snippets = self.attrs["snippets"]
        self.opened = {}

    def array(self, name):
        """Array `name`, opened once: opening reads its metadata from disk (~1 ms), and training
        asks for each array of a video at every batch (to lay it out, advise and read it)."""
        if name not in self.opened:
            self.opened[name] = self.group[name]
        return self.opened[name]

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

    def damaged(self, name, rows, start, stop):
        """Which chunk of array `name` failed ("layer 4, snippets 1024-2047"), read chunk by chunk."""
        array = self.array(name)
        chunk = array.chunks[1]
        for row in rows:
            for first in range(start - start % chunk, stop, chunk):
                last = min(first + chunk, array.shape[1])
                try:
                    array[row, first:last]
                except Exception:  # noqa: BLE001 (any failure marks the chunk)
                    where = f"layer {self.layers[row]}" if name != "block_tokens" else "block tokens"
                    return f"{where}, snippets {first}-{last - 1}"
        return f"snippets {start}-{stop - 1}"

    def arrays(self, layers=None, temporal=False, tokens=False):
        """{array: the rows of it} that Cache.read(layers, temporal, tokens) reads."""
        if temporal and not self.attrs["temporal"]:
            raise InputError(f"{self.path}: has no temporal tokens; rebuild the cache with temporal: true")
        if tokens and not self.attrs.get("block_tokens"):
            raise InputError(f"{self.path}: holds no block tokens; rebuild the cache with the backbone's tokens set")
        index = self.layer_index(layers)
        return {"pooled": index} | ({"temporal": index} if temporal else {}) | ({"block_tokens": [0]} if tokens else {})

    def row_shape(self, name):
        """The shape of a snippet's row of array `name`: (C,), (t, C) or (t, g*g, C)."""
        return self.array(name).shape[2:]

    def read(self, start=0, stop=None, layers=None, temporal=False, tokens=False, out=None):
        """float16 tensors, as stored, {'pooled': (layers, n, C)[, 'temporal': (layers, n, t, C)][,
        'block_tokens': (1, n, t, g*g, C)]} for snippets [start, stop); `layers` a list of tapped
        layers, None for all, or 'last'. `out`: such float16 tensors (views of a batch, say) to
        read into instead of new ones."""
        stop = self.snippets if stop is None else stop
        if not 0 <= start < stop <= self.snippets:
            raise ValueError(f"{self.path}: snippets [{start}, {stop}) outside [0, {self.snippets})")
        result = {}
        for name, leading in self.arrays(layers, temporal, tokens).items():
            array = self.array(name)
            values = (out or {}).get(name)
            if values is None:
                values = torch.empty((len(leading), stop - start, *array.shape[2:]), dtype=torch.float16)
            target = values.numpy()
            try:
                # Straight into the result, a layer at a time: zarr then holds one chunk's bytes
                # at once, which malloc reuses from read to read; several (a selection of every
                # layer) are given back to the kernel and fault in afresh, at half the speed.
                for i, row in enumerate(leading):
                    array.get_basic_selection((row, slice(start, stop)), out=NDBuffer.from_numpy_array(target[i]))
            except Exception as err:  # zarr and the codecs raise many types for damaged chunks
                raise InputError(f"{self.path}: {name}, {self.damaged(name, leading, start, stop)} cannot be read "
                                 f"({first_line(err)}); delete the store and rerun the cache stage") from None
            # Without checksums (format 1) a lost chunk reads as its NaN fill; with them the
            # shard index's own checksum and open_cache's count of shard files catch it.
            if self.attrs["actloc_cache"] == 1 and np.isnan(target).any():
                raise InputError(f"{self.path}: {name} has missing chunks (a truncated store); delete it "
                                 f"and rerun the cache stage")
            result[name] = values
        return result

    def advise(self, start, stop, layers=None, temporal=False, tokens=False):
        """Ask the kernel to start reading the shard files that Cache.read of the same arguments
        will read (posix_fadvise WILLNEED), so that it then finds them in memory. Linux reads at
        most a readahead window (128 KB by default) a call: ADVISE_BYTES a call, over the file.
        It may block while the reads are queued: call it from a thread of its own."""
        for name in self.arrays(layers, temporal, tokens):
            array = self.array(name)
            length = (array.shards or array.chunks)[1]  # snippets a shard file holds
            for shard in range(start // length, (stop - 1) // length + 1):
                for path in (self.path / name / "c" / "0" / str(shard)).rglob("*"):
                    if path.is_file():
                        descriptor = os.open(path, os.O_RDONLY)
                        try:
                            for offset in range(0, os.fstat(descriptor).st_size, ADVISE_BYTES):
                                os.posix_fadvise(descriptor, offset, ADVISE_BYTES, os.POSIX_FADV_WILLNEED)
                        finally:
                            os.close(descriptor)

    def moments(self, layers=None, temporal=False):
        """The recorded moments {'pooled'[, 'temporal']: (count, sum (L, C), sum of squares
        (L, C))} float64 of the layers read as Cache.read's; None for a store without them
        (formats 1 and 2)."""
        if "moments" not in self.attrs:
            return None
        index = self.layer_index(layers)
        out = {}
        for name in MOMENTS[:1 + temporal]:
            try:
                total, squares = torch.from_numpy(self.array(f"moments_{name}")[:])[:, index]
            except Exception as err:  # noqa: BLE001 (as in read)
                raise InputError(f"{self.path}: moments_{name} cannot be read ({first_line(err)}); delete the "
                                 f"store and rerun the cache stage") from None
            out[name] = (self.attrs["moments"][name], total, squares)
        return out


def matches(recorded, expected):
    """Whether a store's attribute is the one expected; an expected dict names only the keys it
    cares about (a token cache's block and grid, not what the checkpoint decides)."""
    if isinstance(expected, dict) and isinstance(recorded, dict):
        return all(recorded.get(key) == value for key, value in expected.items())
    return recorded == expected


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
    if attrs["actloc_cache"] not in READABLE_FORMATS:
        raise InputError(f"{path}: cache format {attrs['actloc_cache']}, this actloc reads "
                         f"{', '.join(map(str, READABLE_FORMATS))}; {rebuild}")
    absent = [key for key in REQUIRED_ATTRS if key not in attrs]
    if absent:
        raise InputError(f"{path}: attribute(s) {', '.join(absent)} missing; {rebuild}")
    differ = [f"{key} is {attrs.get(key)!r} where this run's settings say {value!r}"
              for key, value in (expect or {}).items() if not matches(attrs.get(key), value)]
    if differ:
        raise InputError(f"{path}: built with other settings ({'; '.join(differ)}); {rebuild}")
    layers = len(attrs["layers"])
    leads = {"pooled": layers} | ({"temporal": layers} if attrs["temporal"] else {}) | (
        {"block_tokens": 1} if attrs.get("block_tokens") else {})
    absent = [f"moments_{name}" for name in attrs.get("moments", {}) if f"moments_{name}" not in group]
    if absent:
        raise InputError(f"{path}: array(s) {', '.join(absent)} missing (a truncated store); {rebuild}")
    for name, lead in leads.items():
        if name not in group:
            raise InputError(f"{path}: array {name!r} missing (a truncated store); {rebuild}")
        array = group[name]
        if array.shape[:2] != (lead, attrs["snippets"]) or array.shape[-1] != attrs["channels"]:
            raise InputError(f"{path}: {name} has shape {array.shape}, its attributes say "
                             f"({lead}, {attrs['snippets']}, ..., {attrs['channels']}); {rebuild}")
        # Every shard is one file under <array>/c/; zarr reads an absent one as fill values.
        shards = math.prod(math.ceil(size / shard) for size, shard in zip(array.shape, array.shards))
        present = sum(p.is_file() for p in (path / name / "c").rglob("*"))
        if present != shards:
            raise InputError(f"{path}: {name} has {present} of its {shards} shard files (a truncated "
                             f"store); {rebuild}")
    return Cache(path, group)


def write_index(annotations, folder, out, subsets=None, expect=None, allow_missing=False):
    """Check the store of every video of a dataset (in `subsets`) and list them:
    {video: {path, snippets}}, and the videos without one. Each store must have the attributes
    `expect` (the backbone's, the snippet protocol), and all the same SHARED_ATTRS: a store of
    another backbone among them is an error naming it."""
    paths, missing = video_paths(annotations, folder, ".zarr", subsets, allow_missing)
    listed, first = {}, None
    for video, path in paths.items():
        cache = open_cache(path, expect)
        first = first or cache
        check_alike(cache, first)
        listed[video] = {"path": str(path), "snippets": cache.snippets}
    write_json(out, {"stores": listed, "missing": missing})
    return listed
