"""Published per-video features (a folder of `<video>.npy`, or one HDF5 file of a dataset per
video), found by name without reading them: the annotations stage asks which videos have
features, the cache stage imports them."""

from pathlib import Path

import numpy as np

from ..io import InputError


class Features:
    """One video's published features: their shape, known without reading them, and `read()`."""

    def __init__(self, shape, read):
        self.shape, self.read = tuple(shape), read


def feature_sources(source):
    """{name: Features} of published features: a folder of `<name>.npy` or one HDF5 file."""
    source = Path(source)
    if source.is_dir():
        return {p.stem: Features(np.load(p, mmap_mode="r").shape, lambda p=p: np.load(p, mmap_mode="r"))
                for p in sorted(source.glob("*.npy"))}
    if not source.is_file():
        raise InputError(f"{source}: features not found (a folder of .npy files or an HDF5 file)")
    import h5py

    try:
        with h5py.File(source, "r") as f:
            shapes = {name: f[name].shape for name in f if isinstance(f[name], h5py.Dataset)}
    except OSError as err:
        raise InputError(f"{source}: not a readable HDF5 file ({err})") from None

    def reader(name):
        with h5py.File(source, "r") as f:
            return f[name][()]

    return {name: Features(shape, lambda name=name: reader(name)) for name, shape in shapes.items()}


def feature_key(video, entry, sources):
    """The key of `video`'s features among `sources` (its name, or its annotation entry's file
    stem), or None when it has none."""
    for key in (video, entry.get("file")):
        if key in sources:
            return key
    return None
