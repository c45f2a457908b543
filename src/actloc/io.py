"""Errors users can act on, and writes that never leave a partial file behind."""

import contextlib
import json
import os
from pathlib import Path


class InputError(Exception):
    """Bad user input: the message names the file and what is wrong with it."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp name keeps the suffix, so tools that pick a format from it (ffmpeg) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
