"""The datasets actloc reads: each module turns one dataset type's native files into the ground
truth of `results/{ds}/annotations.json`, which is

    {"classes": [...], "database": {video: {"subset", "duration", "fps", "file",
                                            "annotations": [{"segment", "label"}],
                                            "ambiguous": [[start, end], ...]}},
     "left_out": {subset: [video, ...]}}

`subset` is always one of SUBSETS; `file` is the stem of the video's source file;
`ambiguous` (THUMOS only) holds segments kept out of the ground truth. `left_out` lists the
annotated videos a run does without (`choose`: not selected, or their source absent), so that
results can say they stand on part of a benchmark.

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


def choose(dataset, subsets, select=None, has_source=None, source="", missing="error"):
    """The dataset reduced to the videos a run has: of `subsets` (those trained and tested on),
    only `select[subset]`'s names where given, and (`has_source(video, entry)`) only those whose
    source is present under `source` when `missing` is "skip"; "error" refuses absent sources,
    counting them all. What is left out is listed in the result's `left_out` ({subset: [video]},
    empty when nothing is), so that results can say on how many videos of how many they stand."""
    database, left_out = dict(dataset["database"]), {}
    for subset, names in (select or {}).items():
        outside = [name for name in names if database.get(name, {}).get("subset") != subset]
        if outside:
            raise InputError(f"select.{subset} names {len(outside)} video(s) that are not {subset} videos of the "
                             f"dataset: {', '.join(outside[:5])}")
        chosen = set(names)
        for video, entry in dataset["database"].items():
            if entry["subset"] == subset and video not in chosen:
                del database[video]
                left_out.setdefault(subset, []).append(video)
    if has_source:
        wanted = {video: entry for video, entry in database.items() if entry["subset"] in subsets}
        absent = [video for video, entry in wanted.items() if not has_source(video, entry)]
        if absent and missing != "skip":
            raise InputError(f"{source}: no source for {len(absent)} of the {len(wanted)} videos of "
                             f"{', '.join(subsets)} (first: {', '.join(absent[:5])}); put them there, or set "
                             f"missing: skip in the dataset's config entry (--missing skip) to use the "
                             f"{len(wanted) - len(absent)} present, or list the videos to use under select")
        if absent:
            log.warning("%s: %d of the %d videos of %s have no source, left out: %s", source, len(absent),
                        len(wanted), ", ".join(subsets), ", ".join(absent))
        for video in absent:
            left_out.setdefault(database.pop(video)["subset"], []).append(video)
    for subset in subsets:
        if left_out.get(subset) and not any(entry["subset"] == subset for entry in database.values()):
            raise InputError(f"{source or 'select'}: none of the {len(left_out[subset])} {subset} videos is left "
                             "(no source present, or none selected)")
    return {**dataset, "database": database, "left_out": {s: sorted(v) for s, v in sorted(left_out.items())}}
