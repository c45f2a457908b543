"""A folder of videos without annotations: what a trained model detects actions in
(`actloc detect`, the workflow's detect target). Every video is a testing video with no
ground truth; its duration is what decoding finds."""

from pathlib import Path

from ..io import InputError, video_files

# A model trained on another dataset detects here (config.yaml's `model`): it has no classes of its own.
SUBSET = "testing"


def load(source, out_of_range="error"):
    """The videos in the folder `source` (by file name, one per stem)."""
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of videos")
    database = {file.stem: {"subset": SUBSET, "duration": None, "fps": None, "file": file.stem, "annotations": [],
                            "ambiguous": []} for file in video_files([folder])}
    return {"classes": [], "database": database}
