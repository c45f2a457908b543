"""The datasets actloc reads: each module turns one dataset type's native files into the ground
truth of `results/{ds}/annotations.json`, which is

    {"classes": [...], "database": {video: {"subset", "duration", "fps", "file",
                                            "annotations": [{"segment", "label"}],
                                            "ambiguous": [[start, end], ...]}}}

`subset` is always one of SUBSETS; `file` is the stem of the video's source file;
`ambiguous` (THUMOS only) holds segments kept out of the ground truth.

A dataset type is a module here named after it (config.yaml's `type`), with a
`load(source=None, out_of_range="error", **options)` returning that dict (see docs/extending.md).
"""

import importlib
import importlib.util
import logging

from ..io import InputError

log = logging.getLogger(__name__)

SUBSETS = ("training", "validation", "testing")
OUT_OF_RANGE = ("error", "clip", "keep")


def checked_segment(start, end, duration, where, out_of_range):
    """Validate one segment; return it (clipped if asked), or None when clipping removes it.

    `where` names the file and line or video, for the error message.
    """
    if not start < end:
        raise InputError(f"{where}: segment [{start}, {end}] has start >= end")
    if start < 0:
        raise InputError(f"{where}: segment [{start}, {end}] starts before 0")
    if duration is None or end <= duration + 1e-6 or out_of_range == "keep":
        return [start, end]
    if out_of_range == "error":
        raise InputError(
            f"{where}: segment [{start}, {end}] ends past the video's end ({duration:g} s); "
            "set out_of_range: clip (or keep) for this dataset to accept it"
        )
    if start >= duration:
        log.warning("%s: dropped segment [%g, %g], after the video's end (%g s)", where, start, end, duration)
        return None
    log.warning("%s: clipped segment [%g, %g] to the video's end (%g s)", where, start, end, duration)
    return [start, duration]


def exists(kind):
    """Whether `kind` names a dataset type (a module of this package), without importing it."""
    return kind.isidentifier() and importlib.util.find_spec(f"{__name__}.{kind}") is not None


def load(kind, out_of_range="error", **options):
    """The ground truth of a dataset of type `kind`; `options` are that type's (None: its default)."""
    if out_of_range not in OUT_OF_RANGE:
        raise InputError(f"out_of_range must be one of {', '.join(OUT_OF_RANGE)}, got {out_of_range!r}")
    if not exists(kind):
        raise InputError(f"unknown dataset type {kind!r}: no module actloc.datasets.{kind}")
    module = importlib.import_module(f"{__name__}.{kind}")
    return module.load(out_of_range=out_of_range, **{k: v for k, v in options.items() if v is not None})
