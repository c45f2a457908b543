"""Errors users can act on, and writes that never leave a partial file behind."""

import contextlib
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path


VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


class InputError(Exception):
    """Bad user input: the message names the file and what is wrong with it."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp name keeps the suffix, so tools that pick a format from it (ffmpeg) still work.
    The block may make a file or a directory (a Zarr store); a directory replaces an old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # What a killed writer of this path left behind (under its own pid) is never renamed: drop it.
    prefix = f".{path.stem}.tmp"
    for name in leftovers(path.parent):
        if name.startswith(prefix) and name.endswith(path.suffix):
            remove(path.parent / name)
    tmp = path.with_name(f"{prefix}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)  # os.replace cannot overwrite a non-empty directory
        os.replace(tmp, path)
    finally:
        remove(tmp)


@functools.cache
def leftovers(folder):
    """The temporaries in `folder` when this process first writes there. A killed writer's are
    among them (it died before this process started); listing the folder once, not at every
    write, keeps many writes into one folder (20k imported stores) linear."""
    return [entry.name for entry in os.scandir(folder) if entry.name.startswith(".") and ".tmp" in entry.name]


def remove(path):
    """Delete a file or a directory tree, if there."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def dataset_videos(annotations, subsets=None):
    """{video: entry} of an annotations.json, only those of `subsets` if given."""
    database = read_json(annotations)["database"]
    videos = {video: entry for video, entry in database.items() if not subsets or entry.get("subset") in subsets}
    if not videos:
        raise InputError(f"{annotations}: no video in subset(s) {', '.join(subsets or ['any'])}")
    return videos


def video_paths(annotations, folder, suffix, subsets=None, allow_missing=False):
    """{video: folder/<video><suffix>} for every video of an annotations.json (in `subsets`)
    that has one, and the sorted list of those that have none (an error unless `allow_missing`)."""
    videos = dataset_videos(annotations, subsets)
    folder = Path(folder)
    paths = {video: folder / f"{video}{suffix}" for video in sorted(videos)}
    missing = [video for video, path in paths.items() if not path.exists()]
    if missing and not allow_missing:
        raise InputError(f"{folder}: no {suffix} for {len(missing)} of {len(paths)} videos of {annotations}, "
                         f"e.g. {', '.join(missing[:10])}")
    return {video: path for video, path in paths.items() if video not in missing}, missing


def find_video(folder, stem):
    """folder/stem with the first video suffix that exists there, else folder/stem.mp4."""
    for suffix in VIDEO_SUFFIXES:
        if (Path(folder) / (stem + suffix)).exists():
            return Path(folder) / (stem + suffix)
    return Path(folder) / f"{stem}.mp4"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
