import json
import logging

import h5py
import numpy as np

import pytest

from actloc import datasets
from actloc.datasets import activitynet
from actloc.datasets import thumos14
from actloc.io import InputError
from actloc.stages import annotations

from conftest import THUMOS

THUMOS_CLASSES = [
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
    "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow",
    "LongJump", "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
]


@pytest.fixture(scope="module")
def thumos():
    return thumos14.load(THUMOS, out_of_range="keep")


def test_thumos_published_counts(thumos):
    counts = annotations.summary(thumos)
    assert counts["validation"] == {"videos": 200, "instances": 3007, "ambiguous": 89}
    assert counts["testing"] == {"videos": 213, "instances": 3358, "ambiguous": 99}
    with_action = [v for v, item in thumos["database"].items() if item["subset"] == "testing" and item["annotations"]]
    assert len(with_action) == 212
    only_ambiguous = thumos["database"]["video_test_0001292"]
    assert only_ambiguous["annotations"] == [] and only_ambiguous["ambiguous"]


def test_thumos_classes_alphabetical_and_ambiguous_apart(thumos):
    assert thumos["classes"] == THUMOS_CLASSES
    labels = {a["label"] for item in thumos["database"].values() for a in item["annotations"]}
    assert labels == set(THUMOS_CLASSES)


def test_thumos_cliffdiving_also_listed_as_diving(thumos):
    for item in thumos["database"].values():
        diving = [a["segment"] for a in item["annotations"] if a["label"] == "Diving"]
        for a in item["annotations"]:
            if a["label"] == "CliffDiving":
                assert a["segment"] in diving


def test_thumos_metadata_durations_and_fps(thumos):
    video = thumos["database"]["video_validation_0000051"]
    assert video["duration"] == pytest.approx(169.666666666667)
    assert video["fps"] == 30 and video["file"] == "video_validation_0000051"


def test_thumos_out_of_range_is_an_error_by_default():
    with pytest.raises(InputError, match=r"HighJump_val.txt:190: segment \[113.6, 117.3\] ends past"):
        thumos14.load(THUMOS)


def test_thumos_clip_drops_segments_after_the_end_with_warnings(caplog):
    with caplog.at_level(logging.WARNING):
        clipped = thumos14.load(THUMOS, out_of_range="clip")
    # All 30 out-of-range THUMOS segments start after their video's end (22 in video 270).
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 30 and all("dropped segment" in m for m in messages)
    assert sum("HammerThrow_test.txt" in m for m in messages) == 22
    for item in clipped["database"].values():
        assert all(a["segment"][1] <= item["duration"] for a in item["annotations"])
    assert annotations.summary(clipped)["testing"]["instances"] == 3358 - 26


def test_clip_shortens_a_segment_that_starts_inside(caplog):
    with caplog.at_level(logging.WARNING):
        assert datasets.checked_segment(8.0, 12.0, 10.0, "f.txt:3", "clip") == [8.0, 10.0]
    assert "f.txt:3: clipped segment [8, 12]" in caplog.records[0].getMessage()
    assert datasets.checked_segment(8.0, 12.0, 10.0, "f.txt:3", "keep") == [8.0, 12.0]
    assert datasets.checked_segment(8.0, 12.0, None, "f.txt:3", "error") == [8.0, 12.0]


def write_thumos(root, lines, label="Jump", split="val"):
    """A one-class THUMOS-style tree with the given lines for `label`."""
    for s in ("val", "test"):
        folder = root / f"annotations_{s}"
        folder.mkdir(parents=True)
        (folder / f"{label}_{s}.txt").write_text(lines if s == split else "vid_b  1.0 2.0\n")
        (folder / f"Ambiguous_{s}.txt").write_text("")
    (root / "metadata").mkdir()
    for s, name in (("val", "valid"), ("test", "test")):
        (root / "metadata" / f"thumos14_{name}_metadata.csv").write_text(
            "filename,video-duration,fps,video-frames\nvid_a.mp4,10,30,300\nvid_b.mp4,10,30,300\n")


@pytest.mark.parametrize("line, message", [
    ("vid_a  5.0 4.0\n", r"Jump_val.txt:1: segment \[5.0, 4.0\] has start >= end"),
    ("vid_a  -1 4.0\n", r"Jump_val.txt:1: segment \[-1.0, 4.0\] starts before 0"),
    ("vid_a  1.0\n", r"Jump_val.txt:1: expected 'video_name start end'"),
    ("vid_a  1.0 x\n", r"Jump_val.txt:1: expected"),
    ("vid_z  1.0 2.0\n", r"Jump_val.txt:1: video vid_z is not in"),
    ("vid_b  1.0 2.0\n", r"video vid_b is also in the validation split"),
])
def test_thumos_bad_lines_name_file_and_line(tmp_path, line, message):
    write_thumos(tmp_path, line)
    with pytest.raises(InputError, match=message):
        thumos14.load(tmp_path)


def test_thumos_double_space_and_blank_lines(tmp_path):
    write_thumos(tmp_path, "vid_a  1.0 2.0\n\nvid_a\t3.5   4.5\n")
    loaded = thumos14.load(tmp_path)
    assert [a["segment"] for a in loaded["database"]["vid_a"]["annotations"]] == [[1.0, 2.0], [3.5, 4.5]]


def test_thumos_missing_folder(tmp_path):
    with pytest.raises(InputError, match="annotations_val: expected the official"):
        thumos14.load(tmp_path)


ANET = {
    "version": "VERSION 1.3",
    "database": {
        "abc": {"subset": "training", "duration": 30.0, "annotations": [
            {"segment": [1.0, 5.0], "label": "Surfing"}, {"segment": [6.0, 9.5], "label": "Archery"}]},
        "def": {"subset": "validation", "duration": 20.0, "annotations": [{"segment": [2.0, 4.0], "label": "Surfing"}]},
        "ghi": {"subset": "testing", "duration": 12.0, "annotations": []},
    },
}


def write_anet(tmp_path, data):
    path = tmp_path / "anet.json"
    path.write_text(json.dumps(data))
    return path


def test_activitynet_subsets_labels_and_prefix(tmp_path):
    loaded = activitynet.load(write_anet(tmp_path, ANET))
    assert loaded["classes"] == ["Archery", "Surfing"]
    assert {v: item["subset"] for v, item in loaded["database"].items()} == {
        "abc": "training", "def": "validation", "ghi": "testing"}
    assert loaded["database"]["abc"]["file"] == "v_abc"
    assert loaded["database"]["ghi"]["annotations"] == []
    assert activitynet.load(write_anet(tmp_path, ANET), video_prefix="")["database"]["abc"]["file"] == "abc"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["abc"].update(subset="train"), r"video abc: subset 'train' is not one of"),
    (lambda d: d["def"]["annotations"][0].update(segment=[4.0, 2.0]), r"video def annotation 0: .*start >= end"),
    (lambda d: d["def"]["annotations"][0].update(segment=[18.0, 25.0]), r"video def annotation 0: .*ends past"),
    (lambda d: d["def"]["annotations"][0].pop("label"), r"video def: malformed entry"),
    (lambda d: d["def"]["annotations"][0].update(segment=[1.0]), r"video def: malformed entry"),
])
def test_activitynet_bad_entries_name_file_and_video(tmp_path, change, message):
    data = json.loads(json.dumps(ANET))
    change(data["database"])
    with pytest.raises(InputError, match=message) as err:
        activitynet.load(write_anet(tmp_path, data))
    assert "anet.json" in str(err.value)


def test_activitynet_zero_length_and_repeated_instances_are_dropped_with_one_warning(tmp_path, caplog):
    data = json.loads(json.dumps(ANET))
    data["database"]["def"]["annotations"] += [{"segment": [2.0, 4.0], "label": "Surfing"},  # a repeat
                                               {"segment": [2.0, 4.0], "label": "Archery"},  # another label: kept
                                               {"segment": [0.0, 0.0], "label": "Surfing"},  # zero length
                                               {"segment": [15.0, 22.0], "label": "Surfing"}]  # past the end
    path = write_anet(tmp_path, data)
    with caplog.at_level("INFO"):
        loaded = activitynet.load(path, out_of_range="clip")
    assert loaded["database"]["def"]["annotations"] == [
        {"segment": [2.0, 4.0], "label": "Surfing"}, {"segment": [2.0, 4.0], "label": "Archery"},
        {"segment": [15.0, 20.0], "label": "Surfing"}]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "dropped" in r.getMessage()]
    assert warnings == [f"{path}: dropped 1 zero-length segment(s) (e.g. def [0, 0]); 1 duplicate segment(s) "
                        "(e.g. def [2, 4])"]
    assert f"{path}: kept 5 instances of 3 videos" in caplog.text
    with pytest.raises(InputError, match=r"video def annotation 1: duplicate segment \[2.0, 4.0\] of 'Surfing' "
                                         r"\(defects: drop"):
        activitynet.load(path, out_of_range="clip", defects="error")
    with pytest.raises(InputError, match="ends past"):  # out of range follows out_of_range, as for THUMOS
        activitynet.load(path)


def test_activitynet_malformed_file(tmp_path):
    bad = tmp_path / "anet.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="anet.json: not valid JSON"):
        activitynet.load(bad)
    with pytest.raises(InputError, match="expected a JSON object with a 'database'"):
        activitynet.load(write_anet(tmp_path, [1, 2]))


def test_save_writes_json_and_class_list(tmp_path):
    loaded = activitynet.load(write_anet(tmp_path, ANET))
    annotations.save(loaded, tmp_path / "out" / "annotations.json", tmp_path / "out" / "classes.txt")
    assert json.loads((tmp_path / "out" / "annotations.json").read_text()) == loaded
    assert (tmp_path / "out" / "classes.txt").read_text() == "Archery\nSurfing\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["annotations.json", "classes.txt"]


def test_unknown_type_and_policy():
    with pytest.raises(InputError, match="unknown dataset type 'kinetics'"):
        datasets.load("kinetics")
    with pytest.raises(InputError, match="out_of_range must be one of"):
        datasets.load("thumos14", source=THUMOS, out_of_range="drop")


def official_thumos():
    return thumos14.load(THUMOS, out_of_range="clip")


def test_the_videos_present_are_kept_and_the_others_listed_as_left_out(tmp_path):
    (tmp_path / "v").mkdir()
    for name in ("video_test_0000004.mp4", "video_test_0000006.mkv", "video_validation_0000051.mp4"):
        (tmp_path / "v" / name).touch()
    kept = annotations.choose(official_thumos(), ["testing", "validation"], videos=tmp_path / "v", missing="skip")
    assert sorted(kept["database"]) == ["video_test_0000004", "video_test_0000006", "video_validation_0000051"]
    assert {s: len(v) for s, v in kept["left_out"].items()} == {"testing": 211, "validation": 199}
    assert kept["classes"] == official_thumos()["classes"]  # the benchmark's classes, whatever is present
    with pytest.raises(InputError) as caught:
        annotations.choose(official_thumos(), ["testing", "validation"], videos=tmp_path / "v")
    assert str(caught.value) == (
        f"{tmp_path / 'v'}: no source for 410 of the 413 videos of testing, validation (first: video_test_0000007, "
        "video_test_0000011, video_test_0000026, video_test_0000028, video_test_0000039); put them there, or set "
        "missing: skip in the dataset's config entry (--missing skip) to use the 3 present, or list the videos to "
        "use under select")
    with pytest.raises(InputError, match="no such folder, where the dataset's videos should be"):
        annotations.choose(official_thumos(), ["testing"], videos=tmp_path / "none")
    # Only the subsets a run uses are asked for: the validation videos absent do not count.
    only_test = annotations.choose(official_thumos(), ["testing"], select={"testing": ["video_test_0000004"]},
                       videos=tmp_path / "v")
    assert [v for v, e in only_test["database"].items() if e["subset"] == "testing"] == ["video_test_0000004"]
    assert len(only_test["database"]) == 1 + 200 and len(only_test["left_out"]["testing"]) == 212


def test_a_selection_must_name_videos_of_its_subset(tmp_path):
    with pytest.raises(InputError, match="select.testing names 2 video\\(s\\) that are not testing videos of the "
                                         "dataset: video_validation_0000051, nope"):
        datasets.choose(official_thumos(), ["testing"], {"testing": ["video_validation_0000051", "nope"]})
    full = datasets.choose(official_thumos(), ["testing", "validation"])
    assert full["left_out"] == {} and full["database"] == official_thumos()["database"]


def test_features_present_decide_as_videos_do(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["video_test_0000004"] = np.zeros((3, 2))
    kept = annotations.choose(official_thumos(), ["testing"], features=tmp_path / "f.h5", missing="skip")
    assert [v for v, e in kept["database"].items() if e["subset"] == "testing"] == ["video_test_0000004"]
