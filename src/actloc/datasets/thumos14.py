"""THUMOS-14 from its official per-class annotation files and metadata CSVs."""

import csv
from pathlib import Path

from ..io import InputError
from . import checked_segment

THUMOS_SUBSETS = {"val": "validation", "test": "testing"}
THUMOS_AMBIGUOUS = "Ambiguous"


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


def load(source, metadata=None, out_of_range="error"):
    """THUMOS-14 from the official per-class files under `source`/annotations_{val,test}/.

    `metadata` is a folder holding thumos14_{valid,test}_metadata.csv (default `source`/metadata).
    Every video that appears in a split's files (Ambiguous included) belongs to that split.
    """
    root = Path(source)
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
