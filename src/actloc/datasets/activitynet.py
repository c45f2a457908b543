"""ActivityNet-1.3's official JSON, or any dataset written in that form."""

import logging
from pathlib import Path

from ..io import InputError, read_json
from . import SUBSETS, checked_segment

log = logging.getLogger(__name__)

DEFECTS = ("drop", "error")


def load(source, out_of_range="error", video_prefix="v_", defects="drop"):
    """The dataset of the JSON file `source`.

    Videos keep their JSON keys; `file` is `video_prefix` + key (ActivityNet files are v_<id>).
    Classes are the labels used, sorted. The testing subset may carry no annotations.
    Published ground truths hold zero-length segments and exact repeats of an instance
    (ActivityNet-1.3 validation: 3 and 19): `defects="drop"` drops them with one warning that
    counts them, `"error"` stops at the first. Segments past the end follow `out_of_range`.
    """
    if defects not in DEFECTS:
        raise InputError(f"defects must be one of {', '.join(DEFECTS)}, got {defects!r}")
    path = Path(source)
    raw = read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("database"), dict):
        raise InputError(f"{path}: expected a JSON object with a 'database' object (ActivityNet form)")
    database, dropped = {}, {"zero-length": [], "duplicate": []}
    for video, item in sorted(raw["database"].items()):
        where = f"{path}: video {video}"
        if not isinstance(item, dict) or item.get("subset") not in SUBSETS:
            subset = item.get("subset") if isinstance(item, dict) else None
            raise InputError(f"{where}: subset {subset!r} is not one of {', '.join(SUBSETS)}")
        try:
            duration = None if item.get("duration") is None else float(item["duration"])
            fps = None if item.get("fps") is None else float(item["fps"])
            annotations, seen = [], set()
            for i, ann in enumerate(item.get("annotations", [])):
                start, end = (float(x) for x in ann["segment"])
                label = str(ann["label"])
                defect = "zero-length" if start == end else "duplicate" if (start, end, label) in seen else None
                if defect:
                    if defects == "error":
                        raise InputError(f"{where} annotation {i}: {defect} segment [{start}, {end}] of {label!r} "
                                         "(defects: drop drops these with a warning)")
                    dropped[defect].append(f"{video} [{start:g}, {end:g}]")
                    continue
                seen.add((start, end, label))
                segment = checked_segment(start, end, duration, f"{where} annotation {i}", out_of_range)
                if segment is not None:
                    annotations.append({"segment": segment, "label": label})
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{where}: malformed entry, expected subset, duration and annotations "
                             f"with segment [start, end] and label ({err!r})") from None
        database[video] = {"subset": item["subset"], "duration": duration, "fps": fps,
                           "file": video_prefix + video, "annotations": annotations, "ambiguous": []}
    if any(dropped.values()):
        log.warning("%s: dropped %s", path, "; ".join(
            f"{len(found)} {defect} segment(s) (e.g. {', '.join(found[:3])})" for defect, found in dropped.items() if found))
    log.info("%s: kept %d instances of %d videos", path, sum(len(v["annotations"]) for v in database.values()),
             len(database))
    classes = sorted({a["label"] for v in database.values() for a in v["annotations"]})
    return {"classes": classes, "database": database}
