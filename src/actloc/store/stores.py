"""A video's Zarr store: what the cache stage writes and training reads.

A store `{video}.zarr` holds, for its tapped layers (attribute `layers`, 1-based blocks; -1 for
imported features, whose source layer is unknown):

- `pooled`   (layers, T, C) float16: each snippet's tokens averaged over space and time;
- `temporal` (layers, T, t, C) float16, when configured: averaged over space only, one vector
  per tubelet step (t = snippet frames / 2);
- `block_tokens` (1, T, t, g*g, C) float16, when configured (attribute `block_tokens`: block k,
  grid g): the tokens leaving block k, averaged over space to a g x g grid per tubelet step,
  which the partial method runs the blocks above k on.

Arrays are chunked along T and written a shard at a time, so memory stays bounded whatever the
video's length. The store is written under a temporary name and renamed once complete.
"""

import math
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ..io import InputError, atomic_path, first_line

# The `actloc_cache` attribute, bumped when the layout changes: 2 adds a checksum to every chunk.
# Format 1 stores (no checksums) are still read.
FORMAT = 2
READABLE_FORMATS = (1, 2)


CHUNK = 256  # snippets per chunk


SHARD = 1024  # snippets per shard file: few files per video, bounded write buffer


COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
# A CRC-32C of each compressed chunk, checked on every read: a flipped byte is an error, never
# values (reading a THUMOS-sized array measured the same with it as without, within noise).
CHECKSUM = Crc32cCodec()


# Recorded on every store and compared by `open_cache(expect=...)`.
REQUIRED_ATTRS = ("backbone", "preset", "identity", "layers", "snippet_frames", "stride", "fps", "pixels",
                  "snippets", "channels", "temporal", "precision", "actloc_version")


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

    KNOWN = ("layers", "snippets", "channels", "temporal")  # attributes the writer records itself

    def __init__(self, group, source, layers, shapes, expected):
        self.group, self.source, self.layers = group, source, layers
        self.channels, self.temporal = shapes["pooled"][1][-1], "temporal" in shapes
        self.arrays, self.buffers = {}, {}
        for name, (lead, shape) in shapes.items():
            self.arrays[name] = group.create_array(
                name, shape=(lead, max(expected, 1), *shape), dtype="float16",
                chunks=(1, CHUNK, *shape), shards=(lead, SHARD, *shape),
                compressors=(COMPRESSOR, CHECKSUM), fill_value=np.nan)  # a missing chunk reads as NaN, never as data
            self.buffers[name] = np.empty((lead, SHARD, *shape), np.float16)
        self.written = self.filled = 0

    def append(self, rows):
        """rows: {'pooled': (layers, n, C), 'temporal': (layers, n, t, C), ...} as float arrays."""
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
                 "channels": self.channels, "temporal": self.temporal, "actloc_version": version("actloc")}
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
SHARED_ATTRS = ("backbone", "preset", "identity", "layers", "pixels", "temporal", "channels", "snippet_frames",
                "stride", "block_tokens")


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
        """Which chunk of array `name` failed ("layer 4, snippets 256-511"), read chunk by chunk."""
        array = self.group[name]
        for row in rows:
            for first in range(start - start % CHUNK, stop, CHUNK):
                last = min(first + CHUNK, array.shape[1])
                try:
                    array[row, first:last]
                except Exception:  # noqa: BLE001 (any failure marks the chunk)
                    where = f"layer {self.layers[row]}" if name != "block_tokens" else "block tokens"
                    return f"{where}, snippets {first}-{last - 1}"
        return f"snippets {start}-{stop - 1}"

    def read(self, start=0, stop=None, layers=None, temporal=False, tokens=False):
        """float32 tensors {'pooled': (layers, n, C)[, 'temporal': (layers, n, t, C)][,
        'block_tokens': (1, n, t, g*g, C)]} for snippets [start, stop); `layers` a list of tapped
        layers, None for all, or 'last'."""
        stop = self.snippets if stop is None else stop
        if not 0 <= start < stop <= self.snippets:
            raise ValueError(f"{self.path}: snippets [{start}, {stop}) outside [0, {self.snippets})")
        if temporal and not self.attrs["temporal"]:
            raise InputError(f"{self.path}: has no temporal tokens; rebuild the cache with temporal: true")
        if tokens and not self.attrs.get("block_tokens"):
            raise InputError(f"{self.path}: holds no block tokens; rebuild the cache with the backbone's tokens set")
        index = self.layer_index(layers)
        rows = {"pooled": index} | ({"temporal": index} if temporal else {}) | ({"block_tokens": [0]} if tokens else {})
        out = {}
        for name, leading in rows.items():
            array = self.group[name]
            try:
                # One basic slice per layer: zarr's orthogonal selection is ~50x slower here.
                values = np.stack([array[row, start:stop] for row in leading])
            except Exception as err:  # zarr and the codecs raise many types for damaged chunks
                raise InputError(f"{self.path}: {name}, {self.damaged(name, leading, start, stop)} cannot be read "
                                 f"({first_line(err)}); delete the store and rerun the cache stage") from None
            if np.isnan(values).any():
                raise InputError(f"{self.path}: {name} has missing chunks (a truncated store); delete it "
                                 f"and rerun the cache stage")
            out[name] = torch.from_numpy(values.astype(np.float32))
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
