"""Errors users can act on, and writes that never leave a partial file behind."""

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path


VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
# A write that failed for the disk's sake, not the data's: full, read-only, no permission, over quota.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


class InputError(Exception):
    """Bad user input: the message names the file and what is wrong with it."""


class PartlyDone(InputError):
    """A command that wrote some of its outputs (`outputs`) and failed on some inputs: they get
    their records, and the command still exits non-zero with this message."""

    def __init__(self, message, outputs):
        super().__init__(message)
        self.outputs = outputs


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp name keeps the suffix, so tools that pick a format from it (ffmpeg) still work.
    The block may make a file or a directory (a Zarr store); a directory replaces an old one.
    """
    path = Path(path)
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: cannot be written, {path.parent} or a folder above it is a file") from None
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise InputError(f"{path}: cannot be written: {err.strerror} ({err.filename})") from None
        raise
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
    except BaseException as err:
        reason = write_failure(err, path.parent)
        with contextlib.suppress(OSError):  # on a read-only disk there is nothing to remove
            remove(tmp)
        for folder in created:  # innermost first: a failed write leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        if reason:
            raise InputError(f"{path}: cannot be written: {reason}") from None
        raise


def write_failure(err, folder):
    """Why a write into `folder` failed, if the disk is why (full, read-only, no permission): an
    OSError's reason, or for PyTorch's writer (a RuntimeError) its reason or the disk's state."""
    if isinstance(err, OSError):
        return err.strerror if err.errno in WRITE_ERRNOS else None
    if not (isinstance(err, RuntimeError) and "inline_container" in str(err)):
        return None
    stated = re.search(r"strerror: ([^\n]+)", str(err))
    if stated:
        return stated[1].strip()
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < 1 << 20:
            return os.strerror(errno.ENOSPC)
    return f"the write stopped short ({first_line(err)})"


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


def read_json(path, required=(), kind="the expected file"):
    """A JSON file's content; an InputError if it is missing, not JSON, or (for a JSON object
    that must hold `required` keys) lacks one of them, saying it is not `kind`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    absent = [key for key in required if not isinstance(content, dict) or key not in content]
    if absent:
        raise InputError(f"{path}: not {kind} (no {', '.join(map(repr, absent))} in it)")
    return content


def read_annotations(path):
    """An annotations.json of `actloc annotations`: {"classes": [...], "database": {...}}."""
    return read_json(path, ("classes", "database"), "an annotations.json written by actloc annotations")


def load_weights(path, allowed=()):
    """A checkpoint of tensors (and of the plain types `allowed`) loaded on the CPU, never
    unpickling anything else: unpickling can run code. Errors are one line naming `path`."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    # PyTorch warns of pickle protocols it might not read: what it cannot read is our one error.
    with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            try:  # memory-mapped: a 4 GB checkpoint is not read twice into memory
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # only files older than the zip format cannot be mapped
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # PyTorch's message is a paragraph; what matters is the global it refused, if any.
            refused = re.search(r"GLOBAL ([\w.]+)", str(err))
            if refused:
                raise InputError(f"{path}: not a plain weights checkpoint: it holds a Python object ({refused[1]}) "
                                 "that actloc does not unpickle, since unpickling can run code") from None
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
            raise InputError(f"{path}: not a PyTorch checkpoint ({detail[1] if detail else first_line(err)})") \
                from None
        except Exception as err:  # torch raises several types for files that are not its own
            raise InputError(f"{path}: not a PyTorch checkpoint ({first_line(err)})") from None


def first_line(err):
    """An exception's message up to its first line break: errors stay one line."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def dataset_videos(annotations, subsets=None):
    """{video: entry} of an annotations.json, only those of `subsets` if given."""
    database = read_json(annotations, ("database",), "an annotations.json")["database"]
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


def video_files(paths):
    """The video files among `paths`, a folder standing for the videos in it (sorted); two of one
    name are refused, since outputs are named after the video."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"{path}: a folder with no video in it ({', '.join(VIDEO_SUFFIXES)})")
            files += found
        else:
            files.append(path)
    names = {}
    for file in files:
        if file.stem in names:
            raise InputError(f"{file} and {names[file.stem]}: two videos named {file.stem}; outputs are named "
                             "after the video, give one of them")
        names[file.stem] = file
    return files


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
