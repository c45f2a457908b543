"""View stage: one self-contained HTML page to look at a method's detections: each video playing
(the decoded file, linked, not copied) above its timeline of ground truth and detections by
class and score; a click on a segment seeks the video to its start; filters by class and score;
and, where there is ground truth, a walk through the false positives and misses at a tIoU."""

import json
import logging
import os
from importlib import resources
from pathlib import Path

from ..io import InputError, read_annotations, read_json, write_text
from .evaluate import THRESHOLDS, prediction_table
from .plots import CLASS_COLOURS

log = logging.getLogger(__name__)


def duration_of(video_path, entry, segments):
    """A video's length: its annotations', else its decoded JSON's, else its last segment's end."""
    if entry and entry.get("duration"):
        return float(entry["duration"])
    sidecar = Path(video_path).with_suffix(".json")
    if sidecar.is_file():
        info = read_json(sidecar)
        return info["frames"] / info["fps"]
    return max((end for _, end, *_ in segments), default=1.0)


def page_data(detections_path, videos_folder, out, annotations=None, subset="testing", preset="thumos"):
    """What the page shows: {annotated, classes, colours (the plots'), thresholds, videos: [{name, src (relative
    to the page), duration, truth [[start, end, label]], detections [[start, end, label, score]]}]}."""
    if preset not in THRESHOLDS:
        raise InputError(f"unknown tIoU preset {preset!r}: expected one of {', '.join(THRESHOLDS)}")
    found = prediction_table(read_json(detections_path), detections_path)
    dataset = read_annotations(annotations) if annotations else None
    entries = {v: e for v, e in dataset["database"].items() if e["subset"] == subset} if dataset else {}
    names = sorted(entries) if dataset else sorted(read_json(detections_path)["results"])
    if not names:
        raise InputError(f"{annotations or detections_path}: no {subset} video to show" if dataset else
                         f"{detections_path}: no video in it")
    classes = dataset["classes"] if dataset else sorted(set(found["label"]))
    page_folder, videos, absent = Path(out).resolve().parent, [], []
    for name in names:
        path = Path(videos_folder) / f"{name}.mp4"
        if not path.is_file():
            absent.append(name)
        own = found[found["video"] == name].sort_values("score", ascending=False, kind="stable")
        detections = [[round(s, 3), round(e, 3), label, round(score, 4)]
                      for s, e, label, score in own[["start", "end", "label", "score"]].itertuples(index=False)]
        truth = [[*a["segment"], a["label"]] for a in entries.get(name, {}).get("annotations", [])]
        videos.append({"name": name, "src": Path(os.path.relpath(path.resolve(), page_folder)).as_posix(),
                       "duration": duration_of(path, entries.get(name), truth + detections),
                       "truth": truth, "detections": detections})
    if absent:
        log.warning("%s: no decoded video for %d of %d videos (they show no picture): %s", videos_folder,
                    len(absent), len(names), ", ".join(absent[:10]))
    return {"annotated": dataset is not None, "classes": classes, "colours": CLASS_COLOURS,
            "thresholds": [round(float(t), 2) for t in THRESHOLDS[preset]], "videos": videos}


def run(detections_path, videos_folder, out, annotations=None, subset="testing", preset="thumos", min_score=0.1,
        title=None):
    """The `actloc view` command: write the page; return how many videos it shows."""
    data = page_data(detections_path, videos_folder, out, annotations, subset, preset)
    template = resources.files(__package__).joinpath("view.html").read_text()
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no </script> inside the script
    title = title or f"{Path(detections_path).parent.name}: {Path(detections_path).name}"
    page = (template.replace("__DATA__", text).replace("__MIN_SCORE__", f"{min_score:g}")
            .replace("__TITLE__", title.replace("&", "&amp;").replace("<", "&lt;")))
    write_text(out, page)
    return len(data["videos"])
