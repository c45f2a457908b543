"""Ground truth from each dataset's native files, as one ActivityNet-form JSON.

The output (`results/{ds}/annotations.json`) is

    {"classes": [...], "database": {video: {"subset", "duration", "fps", "file",
                                            "annotations": [{"segment", "label"}],
                                            "ambiguous": [[start, end], ...]}}}

`subset` is always one of SUBSETS; `file` is the stem of the video's source file;
`ambiguous` (THUMOS only) holds segments kept out of the ground truth.
"""

import csv
import logging
from pathlib import Path

from .io import InputError, read_json, write_json, write_text

log = logging.getLogger(__name__)

SUBSETS = ("training", "validation", "testing")
OUT_OF_RANGE = ("error", "clip", "keep")
THUMOS_SUBSETS = {"val": "validation", "test": "testing"}
THUMOS_AMBIGUOUS = "Ambiguous"


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


def read_thumos_metadata(path):
    """THUMOS metadata CSV (filename, video-duration, fps, video-frames) -> {video: (duration, fps)}."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {
            Path(r["filename"]).stem: (float(r["video-duration"]), float(r["fps"])) for r in rows
        }
    except FileNotFoundError:
        raise InputError(f"{path}: metadata file not found") from None
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"{path}: expected columns filename, video-duration, fps, video-frames ({err!r})"
        ) from None


def read_thumos_lines(path):
    """Yield (line number, video, start, end) from one official `<Class>_<split>.txt` file."""
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            video, start, end = fields
            yield number, video, float(start), float(end)
        except ValueError:
            raise InputError(
                f"{path}:{number}: expected 'video_name start end', got {line.strip()!r}"
            ) from None


def load_thumos14(root, metadata=None, out_of_range="error"):
    """THUMOS-14 from the official per-class files under `root`/annotations_{val,test}/.

    `metadata` is a folder holding thumos14_{valid,test}_metadata.csv (default `root`/metadata).
    Every video that appears in a split's files (Ambiguous included) belongs to that split.
    """
    root = Path(root)
    metadata = Path(metadata) if metadata else root / "metadata"
    meta_files = {"val": "thumos14_valid_metadata.csv", "test": "thumos14_test_metadata.csv"}
    database, classes = {}, None
    for split, subset in THUMOS_SUBSETS.items():
        folder = root / f"annotations_{split}"
        files = sorted(folder.glob(f"*_{split}.txt"))
        names = [f.name[: -len(f"_{split}.txt")] for f in files]
        if THUMOS_AMBIGUOUS not in names or len(names) < 2:
            raise InputError(f"{folder}: expected the official <Class>_{split}.txt files and {THUMOS_AMBIGUOUS}_{split}.txt")
        split_classes = sorted(n for n in names if n != THUMOS_AMBIGUOUS)
        if classes is not None and split_classes != classes:
            raise InputError(f"{folder}: classes differ from the validation split's: {split_classes}")
        classes = split_classes
        durations = read_thumos_metadata(metadata / meta_files[split])
        for path, label in zip(files, names):
            for number, video, start, end in read_thumos_lines(path):
                if video not in durations:
                    raise InputError(f"{path}:{number}: video {video} is not in {metadata / meta_files[split]}")
                duration, fps = durations[video]
                entry = database.setdefault(
                    video,
                    {"subset": subset, "duration": duration, "fps": fps, "file": video,
                     "annotations": [], "ambiguous": []},
                )
                if entry["subset"] != subset:
                    raise InputError(f"{path}:{number}: video {video} is also in the {entry['subset']} split")
                segment = checked_segment(start, end, duration, f"{path}:{number}", out_of_range)
                if segment is None:
                    continue
                if label == THUMOS_AMBIGUOUS:
                    entry["ambiguous"].append(segment)
                else:
                    entry["annotations"].append({"segment": segment, "label": label})
    return {"classes": classes, "database": dict(sorted(database.items()))}


def load_activitynet(path, out_of_range="error", video_prefix="v_"):
    """ActivityNet-1.3's official JSON, or any dataset written in that form.

    Videos keep their JSON keys; `file` is `video_prefix` + key (ActivityNet files are v_<id>).
    Classes are the labels used, sorted. The testing subset may carry no annotations.
    """
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("database"), dict):
        raise InputError(f"{path}: expected a JSON object with a 'database' object (ActivityNet form)")
    database = {}
    for video, item in sorted(raw["database"].items()):
        where = f"{path}: video {video}"
        if not isinstance(item, dict) or item.get("subset") not in SUBSETS:
            subset = item.get("subset") if isinstance(item, dict) else None
            raise InputError(f"{where}: subset {subset!r} is not one of {', '.join(SUBSETS)}")
        try:
            duration = None if item.get("duration") is None else float(item["duration"])
            fps = None if item.get("fps") is None else float(item["fps"])
            annotations = []
            for i, ann in enumerate(item.get("annotations", [])):
                start, end = (float(x) for x in ann["segment"])
                label = str(ann["label"])
                segment = checked_segment(start, end, duration, f"{where} annotation {i}", out_of_range)
                if segment is not None:
                    annotations.append({"segment": segment, "label": label})
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{where}: malformed entry, expected subset, duration and annotations "
                             f"with segment [start, end] and label ({err!r})") from None
        database[video] = {"subset": item["subset"], "duration": duration, "fps": fps,
                           "file": video_prefix + video, "annotations": annotations, "ambiguous": []}
    classes = sorted({a["label"] for v in database.values() for a in v["annotations"]})
    return {"classes": classes, "database": database}


def load(kind, source=None, metadata=None, out_of_range="error", video_prefix="v_", **demo):
    """Dispatch on the dataset type of config.yaml."""
    if out_of_range not in OUT_OF_RANGE:
        raise InputError(f"out_of_range must be one of {', '.join(OUT_OF_RANGE)}, got {out_of_range!r}")
    if kind == "thumos14":
        return load_thumos14(source, metadata, out_of_range)
    if kind == "activitynet":
        return load_activitynet(source, out_of_range, video_prefix)
    if kind == "demo":
        from .demo_data import ground_truth, plan

        return ground_truth(plan(**demo))
    raise InputError(f"unknown dataset type {kind!r}: expected thumos14, activitynet or demo")


def save(dataset, out, classes_out):
    write_json(out, dataset)
    write_text(classes_out, "".join(f"{c}\n" for c in dataset["classes"]))


def summary(dataset):
    """Videos and action instances per subset, for logs and the command line."""
    counts = {}
    for item in dataset["database"].values():
        c = counts.setdefault(item["subset"], {"videos": 0, "instances": 0, "ambiguous": 0})
        c["videos"] += 1
        c["instances"] += len(item["annotations"])
        c["ambiguous"] += len(item["ambiguous"])
    return counts

