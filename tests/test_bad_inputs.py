"""Hostile and odd inputs through the command line, as a new user would give them: each gets
correct output, or one line naming the input and what is wrong, a non-zero exit and nothing
left behind."""

import json
import re

import numpy as np
import pytest
import torch

from actloc import media
from actloc import cli
from actloc.stages import decode
from conftest import THUMOS, run_ffmpeg, write_store

PROGRESS = re.compile(r"\[\d\d:\d\d[<,\]]")  # a tqdm status line


def actloc(capfd, *args):
    """Run `actloc ARGS` in this process: (exit code, stderr's lines, progress bars left out)."""
    try:
        code = cli.main([str(arg) for arg in args])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    lines = [line.rsplit("\r", 1)[-1] for line in capfd.readouterr().err.splitlines()]
    return code, [line for line in lines if line.strip() and not PROGRESS.search(line)]


def files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def fails_cleanly(capfd, folder, *args, says):
    """The command exits non-zero with one line matching `says`, and writes nothing in `folder`."""
    before = files(folder)
    code, lines = actloc(capfd, *args)
    assert code != 0, lines
    assert len(lines) == 1, lines
    assert re.search(says, lines[0]), lines[0]
    assert files(folder) == before
    return lines[0]


# Videos --------------------------------------------------------------------------------------

def decode_args(source, out_dir, *extra):
    return ["decode", source, "--out-dir", out_dir, "--fps", 10, "--short-side", 64, *extra]


def test_a_rotated_phone_video_is_decoded_upright_at_its_shown_size(tmp_path, capfd):
    # What the phone shows: portrait 240 x 320, red above, blue below. It is stored turned a
    # quarter clockwise (320 x 240) with a display matrix turning it back (90 degrees counter-clockwise).
    shown = "color=red:s=240x160:d=1[top];color=blue:s=240x160:d=1[bottom];[top][bottom]vstack,format=yuv420p"
    run_ffmpeg("-f", "lavfi", "-i", shown, "-vf", "transpose=clock", "-c:v", "libx264", tmp_path / "stored.mp4")
    run_ffmpeg("-display_rotation", "90", "-i", tmp_path / "stored.mp4", "-c", "copy", tmp_path / "phone.mp4")
    assert media.probe(tmp_path / "phone.mp4")["rotation"] == 90
    code, lines = actloc(capfd, *decode_args(tmp_path / "phone.mp4", tmp_path / "out"))
    assert code == 0, lines
    info = json.loads((tmp_path / "out" / "phone.json").read_text())
    assert (info["width"], info["height"]) == (64, 86)  # portrait, aspect 0.75 kept
    assert info["source"]["rotation"] == 90
    frame = next(media.iter_frames(tmp_path / "out" / "phone.mp4")).astype(int)
    assert frame.shape == (86, 64, 3)
    top, bottom = frame[:30].mean(axis=(0, 1)), frame[-30:].mean(axis=(0, 1))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # upright: red above, blue below
    # Read straight from the source, the frames are upright too, at its displayed shape.
    assert next(media.iter_frames(tmp_path / "phone.mp4")).shape == (320, 240, 3)
    assert next(media.iter_frames(tmp_path / "phone.mp4", size=32)).shape == (32, 32, 3)


def test_non_square_pixels_are_scaled_to_the_shape_they_are_shown_at(tmp_path, capfd):
    # 320 x 240 stored, pixels 4:3 wide: shown 426.7 x 240 (16:9).
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=1", "-vf", "setsar=4/3", "-c:v", "libx264",
               tmp_path / "anamorphic.mp4")
    code, lines = actloc(capfd, *decode_args(tmp_path / "anamorphic.mp4", tmp_path / "out"))
    assert code == 0, lines
    info = json.loads((tmp_path / "out" / "anamorphic.json").read_text())
    assert info["source"]["sample_aspect_ratio"] == [4, 3]
    assert (info["width"], info["height"]) == (114, 64)
    assert media.probe(tmp_path / "out" / "anamorphic.mp4")["sample_aspect_ratio"] == [1, 1]


@pytest.fixture(scope="module")
def clean_video(tmp_path_factory):
    """8 s of a moving pattern, index at the front (faststart): cut in half, its headers survive."""
    path = tmp_path_factory.mktemp("clean") / "clean.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=8", "-c:v", "libx264", "-g", "50",
               "-movflags", "+faststart", path)
    return path


def damaged(kind, clean, folder):
    data = bytearray(clean.read_bytes())
    if kind == "corrupt":  # bytes overwritten in the middle
        data[len(data) // 2:len(data) // 2 + 2000:7] = np.random.default_rng(0).integers(0, 256, 286, np.uint8).tobytes()
    else:  # cut at half its bytes: the container still says 8 s
        del data[len(data) // 2:]
    path = folder / f"{kind}.mp4"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind, says", [
    ("corrupt", r"corrupt.mp4: damaged: \d+ decoder error\(s\), the first: \[h264\]"),
    ("truncated", r"truncated.mp4: damaged: .*4.00 s decoded of the 8.00 s its container states"),
])
def test_damaged_videos_are_refused_or_decoded_with_the_damage_recorded(tmp_path, capfd, clean_video, kind, says):
    source = damaged(kind, clean_video, tmp_path)
    fails_cleanly(capfd, tmp_path, *decode_args(source, tmp_path / "out"), says=f"^actloc decode: error: .*{says}")
    code, lines = actloc(capfd, *decode_args(source, tmp_path / "out", "--damage", "warn",
                                             "--manifest", tmp_path / "manifest.json"))
    assert code == 0, lines
    damage = json.loads((tmp_path / "out" / f"{kind}.json").read_text())["damage"]
    assert damage == json.loads((tmp_path / "manifest.json").read_text())[kind]["damage"]
    if kind == "corrupt":
        assert damage["decoder_errors"] > 0 and not damage["truncated"]
    else:
        assert damage["truncated"] and damage["decoded_seconds"] == 4.0 and damage["container_seconds"] == 8.0
    # Asked for `error` again, the video decoded under `warn` is not kept as done.
    fails_cleanly(capfd, tmp_path, *decode_args(source, tmp_path / "out"), says="damaged")


def test_a_clean_video_records_no_damage(tmp_path, capfd, clean_video):
    code, lines = actloc(capfd, *decode_args(clean_video, tmp_path / "out"))
    assert code == 0, lines
    assert json.loads((tmp_path / "out" / "clean.json").read_text())["damage"] is None


def test_decode_into_the_sources_own_folder_refuses_to_overwrite_it(tmp_path, capfd, clean_video):
    source = tmp_path / "clip.mp4"
    source.write_bytes(clean_video.read_bytes())
    fails_cleanly(capfd, tmp_path, *decode_args(source, tmp_path),
                  says="clip.mp4: decode would write over its own source")
    assert source.read_bytes() == clean_video.read_bytes()


def test_options_are_taken_by_their_whole_names_and_a_file_is_no_folder(tmp_path, capfd, clean_video):
    source = tmp_path / "clip.mp4"
    source.write_bytes(clean_video.read_bytes())
    # argparse would take --out for --out-dir, and the source for the folder to write into
    fails_cleanly(capfd, tmp_path, "decode", source, "--out", source, "--fps", 10, "--short-side", 64,
                  says="the following arguments are required: --out-dir")
    fails_cleanly(capfd, tmp_path, "decode", source, "--out-dir", source, "--fps", 10, "--short-side", 64,
                  says="clip.mp4/clip.mp4: cannot be written, .*clip.mp4 or a folder above it is a file")
    assert source.read_bytes() == clean_video.read_bytes()


def test_a_failed_write_leaves_no_new_folder(tmp_path, capfd):
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    fails_cleanly(capfd, tmp_path, *decode_args(tmp_path / "bad.mp4", tmp_path / "new" / "sub"),
                  says="bad.mp4: cannot be read as a video")


@pytest.mark.parametrize("option, value, says", [
    ("--fps", 0, "argument --fps: must be a positive number, got 0"),
    ("--fps", -5, "argument --fps: must be a positive number, got -5"),
    ("--fps", "nan", "argument --fps: must be a positive number, got nan"),
    ("--short-side", 65, "argument --short-side: must be even"),
    ("--short-side", 0, "argument --short-side: must be at least 2"),
])
def test_decode_settings_are_checked_before_ffmpeg_runs(tmp_path, capfd, clean_video, option, value, says):
    args = decode_args(clean_video, tmp_path / "out")
    args[args.index(option) + 1] = value
    fails_cleanly(capfd, tmp_path, *args, says=f"^actloc decode: error: {says}")


# Cache ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, says", [
    (["--stride", 0], "argument --stride: must be at least 1, got 0"),
    (["--stride", 20], r"--snippet-frames 16 --stride 20: stride must be within 1..16 \(the snippet frames\)"),
    (["--snippet-frames", 15], r"--snippet-frames 15 --stride 4: snippet frames must be a multiple of the backbone's "
                               r"tubelet \(2 frames\)"),
    (["--batch", 0], "argument --batch: must be at least 1, got 0"),
    (["--batch", "two"], "argument --batch: expected an integer, got 'two'"),
])
def test_cache_options_are_checked_where_they_enter(tmp_path, capfd, options, says):
    description = {"name": "b", "family": "videomae", "tubelet": 2, "preset": "tiny", "checkpoint": None, "seed": 0,
                   "identity": "random:0", "layers": [4], "pixels": 32, "temporal": True, "precision": "fp32"}
    (tmp_path / "b.json").write_text(json.dumps(description))
    fails_cleanly(capfd, tmp_path, "cache", tmp_path / "v.mp4", "--backbone", tmp_path / "b.json", "--out-dir",
                  tmp_path / "c", *options, says=f"^actloc cache: error: {says}")


def two_stores(folder, **other):
    """Stores of videos a and b, b's with the attributes `other`; their annotations.json."""
    pooled = np.ones((2, 5, 8), np.float32)
    write_store(folder / "a.zarr", pooled)
    write_store(folder / "b.zarr", pooled, **other)
    (folder / "gt.json").write_text(json.dumps({"classes": ["x"], "database": {
        v: {"subset": "training", "duration": 3.0, "annotations": []} for v in "ab"}}))
    return folder / "gt.json"


def test_cache_index_refuses_a_store_of_another_backbone_naming_it(tmp_path, capfd):
    annotations = two_stores(tmp_path, identity="sha256:other")
    fails_cleanly(capfd, tmp_path, "cache-index", "--annotations", annotations, "--folder", tmp_path,
                  "--out", tmp_path / "index.json",
                  says=r"b.zarr: not built as the other stores \(identity 'sha256:other' where a.zarr has 'synthetic'\)")


def test_cache_index_checks_every_store_against_the_backbone_and_protocol_given(tmp_path, capfd):
    annotations = two_stores(tmp_path)
    common = ["cache-index", "--annotations", annotations, "--folder", tmp_path, "--out", tmp_path / "index.json"]
    fails_cleanly(capfd, tmp_path, *common, "--stride", 8, says=r"a.zarr: built with other settings \(stride is 4 where "
                                                                r"this run's settings say 8\)")
    (tmp_path / "backbone.json").write_text(json.dumps({
        "name": "synthetic", "family": "videomae", "tubelet": 2, "identity": "sha256:abc", "layers": [1, 2],
        "pixels": None, "temporal": False, "precision": "fp32", "preset": "none", "checkpoint": None, "seed": 0}))
    fails_cleanly(capfd, tmp_path, *common, "--backbone", tmp_path / "backbone.json",
                  says=r"a.zarr: built with other settings \(identity is 'synthetic' where this run's settings say 'sha256:abc'\)")
    code, lines = actloc(capfd, *common, "--snippet-frames", 16, "--stride", 4)
    assert code == 0, lines
    assert set(json.loads((tmp_path / "index.json").read_text())["stores"]) == {"a", "b"}


# Train, infer, checkpoints -------------------------------------------------------------------

HEAD_ONLY = {"method": "head_only"}


def test_settings_without_a_method_are_one_line(tmp_path, capfd, synthetic_dataset):
    fails_cleanly(capfd, tmp_path, *train_args(*synthetic_dataset, tmp_path, {}),
                  says=r"train --settings: no method given .* got None")


def train_args(index, annotations, folder, settings):
    return ["train", "--index", index, "--annotations", annotations, "--subset", "training", "--settings",
            json.dumps(settings), "--out-model", folder / "m.pt", "--out-log", folder / "log.csv",
            "--out-summary", folder / "train.json"]


@pytest.mark.parametrize("train, says", [
    ({"epochs": 0}, "train: epochs must be at least 1, got 0"),
    ({"batch": 0}, "train: batch must be at least 1, got 0"),
    ({"lr": -1}, "train: lr must be positive, got -1"),
])
def test_training_settings_out_of_range_are_one_line(tmp_path, capfd, synthetic_dataset, train, says):
    index, annotations = synthetic_dataset
    fails_cleanly(capfd, tmp_path, *train_args(index, annotations, tmp_path, {"method": "head_only", "train": train}),
                  says=f"^actloc train: error: training settings: {says}")


def test_an_index_without_stores_or_annotations_without_classes_are_named(tmp_path, capfd, synthetic_dataset):
    index, annotations = synthetic_dataset
    (tmp_path / "not_index.json").write_text(json.dumps({"videos": {}}))
    fails_cleanly(capfd, tmp_path, *train_args(tmp_path / "not_index.json", annotations, tmp_path, HEAD_ONLY),
                  says=r"not_index.json: not a cache index \(no 'stores' in it\)")
    (tmp_path / "no_classes.json").write_text(json.dumps({"database": {}}))
    fails_cleanly(capfd, tmp_path, *train_args(index, tmp_path / "no_classes.json", tmp_path, HEAD_ONLY),
                  says=r"no_classes.json: not an annotations.json written by actloc annotations \(no 'classes'")


def test_outputs_never_overwrite_inputs_or_each_other(tmp_path, capfd, synthetic_dataset):
    index, annotations = synthetic_dataset
    args = train_args(index, annotations, tmp_path, HEAD_ONLY)
    # Inline --settings longer than a file name may be are no path, not an error.
    assert not cli.is_file(tmp_path / json.dumps({"method": "head_only", "head": {"width": 8}} | {"x" * 300: 1}))
    args[args.index("--out-log") + 1] = tmp_path / "m.pt"
    fails_cleanly(capfd, tmp_path, *args, says="--out-model and --out-log are the same file")
    (tmp_path / "predictions.json").write_text(json.dumps({"results": {}}))
    fails_cleanly(capfd, tmp_path, "evaluate", "--annotations", annotations, "--predictions",
                  tmp_path / "predictions.json", "--subset", "training", "--out-map", tmp_path / "predictions.json",
                  "--out-per-class", tmp_path / "pc.csv",
                  says="--out-map .*predictions.json is also an input \\(--predictions\\); evaluate would write over it")


class Payload:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


@pytest.mark.parametrize("content, says", [
    (lambda path: torch.save({"w": torch.ones(2), "hook": Payload()}, path),
     r"not a plain weights checkpoint: it holds a Python object \(print\) that actloc does not unpickle"),
    (lambda path: path.write_bytes(b"\x80\x04not a pickle"), r"not a PyTorch checkpoint \("),
    (lambda path: np.save(path.with_suffix(".npy"), np.ones(3)) or path.with_suffix(".npy").rename(path),
     "not a PyTorch checkpoint"),
])
def test_checkpoints_that_are_not_plain_weights_are_one_line(tmp_path, capfd, content, says):
    (tmp_path / "in").mkdir()
    checkpoint = tmp_path / "in" / "weights.pth"
    content(checkpoint)
    line = fails_cleanly(capfd, tmp_path, "backbone", "--name", "b", "--preset", "tiny", "--checkpoint", checkpoint,
                         "--out", tmp_path / "b.json", says=f"weights.pth: {says}")
    assert "this ran" not in line


# Evaluate ------------------------------------------------------------------------------------

@pytest.fixture
def ground_truth(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps({"classes": ["a"], "database": {"v": {
        "subset": "testing", "annotations": [{"segment": [0, 10], "label": "a"}]}}}))
    return tmp_path / "gt.json"


def evaluate_args(annotations, predictions, folder):
    return ["evaluate", "--annotations", annotations, "--predictions", predictions, "--subset", "testing",
            "--out-map", folder / "out" / "map.csv", "--out-per-class", folder / "out" / "pc.csv"]


@pytest.mark.parametrize("detection, says", [
    ({"label": "a", "score": float("nan"), "segment": [0, 10]}, r"score nan .* must be finite numbers"),
    ({"label": "a", "score": 0.5, "segment": [0, float("inf")]}, r"segment \[0.0, inf\] must be finite numbers"),
    ({"label": "zebra", "score": 0.5, "segment": [0, 10]}, "labels that are not classes of the dataset: zebra"),
])
def test_evaluate_refuses_non_finite_or_unknown_predictions_naming_the_file(tmp_path, capfd, ground_truth,
                                                                           detection, says):
    # json.dumps writes NaN and Infinity, which Python's reader (and the official evaluator's) accept.
    (tmp_path / "pred.json").write_text(json.dumps({"results": {"v": [detection]}}))
    fails_cleanly(capfd, tmp_path, *evaluate_args(ground_truth, tmp_path / "pred.json", tmp_path),
                  says=f"pred.json: .*{says}")


@pytest.mark.parametrize("ground, says", [
    ({"database": {}}, r"no 'classes'"),
    ({"classes": ["a"]}, r"no 'database'"),
    ([1, 2], r"no 'classes', 'database'"),
])
def test_evaluate_names_ground_truth_that_is_not_an_annotations_file(tmp_path, capfd, ground, says):
    (tmp_path / "gt.json").write_text(json.dumps(ground))
    (tmp_path / "pred.json").write_text(json.dumps({"results": {}}))
    fails_cleanly(capfd, tmp_path, *evaluate_args(tmp_path / "gt.json", tmp_path / "pred.json", tmp_path),
                  says=f"gt.json: not an annotations.json written by actloc annotations \\({says}")


# A disk that fails the write ---------------------------------------------------------------------

def mounted(folder, options):
    """A small tmpfs at `folder` (root's), or a skip saying why it cannot be made here."""
    import subprocess

    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", folder], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here to fail writes for real ({done.stderr.strip() or 'not root'})")
    return folder


@pytest.fixture(params=["full", "read-only"])
def failing_disk(request, tmp_path):
    """A folder on a disk that is full (a filler took every byte) or mounted read-only: what a
    busy cluster's scratch or a wrong mount gives a job."""
    import subprocess

    folder = mounted(tmp_path / "disk", "size=256k" if request.param == "full" else "ro,size=64k")
    if request.param == "full":
        with open(folder / "filler", "wb") as f, pytest.raises(OSError):
            f.write(b"\0" * (1 << 20))
    yield folder, "No space left on device" if request.param == "full" else "Read-only file system"
    subprocess.run(["umount", folder], check=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, source_video, synthetic_dataset):
    """One valid input of every command family: a source video, a decoded one and a backbone
    JSON, a cache with its model, detections and a method's tables."""
    folder = tmp_path_factory.mktemp("inputs")
    index, annotations = synthetic_dataset
    assert cli.main(["decode", str(source_video), "--out-dir", str(folder / "videos"), "--fps", "10",
                     "--short-side", "64"]) == 0
    assert cli.main(["backbone", "--name", "t", "--preset", "tiny", "--pixels", "32", "--out",
                     str(folder / "b.json")]) == 0
    settings = json.dumps({"method": "head_only", "head": {"width": 16, "levels": 2, "regression_ranges": [[0, 8],
                                                                                                           [8, 1e4]]},
                           "train": {"epochs": 1, "warmup_epochs": 0}})
    model = ["--index", index, "--annotations", annotations, "--subset", "training", "--device", "cpu"]
    assert cli.main(["train", *map(str, model), "--settings", settings, "--out-model", str(folder / "model.pt"),
                     "--out-log", str(folder / "log.csv"), "--out-summary", str(folder / "train.json")]) == 0
    assert cli.main(["infer", *map(str, model), "--model", str(folder / "model.pt"), "--out",
                     str(folder / "d.json")]) == 0
    assert cli.main(["evaluate", "--annotations", str(annotations), "--predictions", str(folder / "d.json"),
                     "--subset", "training", "--out-map", str(folder / "map.csv"), "--out-per-class",
                     str(folder / "pc.csv")]) == 0
    assert cli.main(["report", "--methods", "head_only", "--maps", str(folder / "map.csv"), "--summaries",
                     str(folder / "train.json"), "--out-csv", str(folder / "table.csv"), "--out-md",
                     str(folder / "table.md")]) == 0
    return {"folder": folder, "model": model, "settings": settings, "annotations": annotations,
            "source": source_video}


# Each command family writing into the failing folder `out`.
WRITES = {
    "decode": lambda i, out: ["decode", i["source"], "--out-dir", out / "videos", "--fps", 10, "--short-side", 64],
    "cache": lambda i, out: ["cache", i["folder"] / "videos" / "pattern.mp4", "--backbone", i["folder"] / "b.json",
                             "--out-dir", out / "cache", "--batch", 4],
    "annotations": lambda i, out: ["annotations", "--type", "thumos14", "--source", THUMOS, "--out-of-range", "clip",
                                   "--out", out / "a.json", "--classes", out / "c.txt"],
    "backbone": lambda i, out: ["backbone", "--name", "t", "--preset", "tiny", "--out", out / "b.json"],
    "train": lambda i, out: ["train", *i["model"], "--settings", i["settings"], "--out-model", out / "model.pt",
                             "--out-log", out / "log.csv", "--out-summary", out / "train.json"],
    "infer": lambda i, out: ["infer", *i["model"], "--model", i["folder"] / "model.pt", "--out", out / "d.json"],
    "evaluate": lambda i, out: ["evaluate", "--annotations", i["annotations"], "--predictions", i["folder"] / "d.json",
                                "--subset", "training", "--out-map", out / "map.csv", "--out-per-class", out / "pc.csv"],
    "report": lambda i, out: ["report", "--methods", "head_only", "--maps", i["folder"] / "map.csv", "--summaries",
                              i["folder"] / "train.json", "--out-csv", out / "t.csv", "--out-md", out / "t.md"],
    "plots": lambda i, out: ["plots", "--table", i["folder"] / "table.csv", "--methods", "head_only", "--per-class",
                             i["folder"] / "pc.csv", "--detections", i["folder"] / "d.json", "--annotations",
                             i["annotations"], "--subset", "training", "--out-map", out / "1.png", "--out-per-class",
                             out / "2.png", "--out-timelines", out / "3.png"],
}


@pytest.mark.parametrize("family", list(WRITES))
def test_a_full_or_read_only_disk_is_one_line_naming_the_path_and_leaves_nothing(family, failing_disk, inputs,
                                                                               capfd):
    out, reason = failing_disk
    fails_cleanly(capfd, out, *WRITES[family](inputs, out), says=rf"^actloc {family}: error: {re.escape(str(out))}/"
                                                                  rf"\S+: cannot be written: {reason}")


def test_of_several_video_streams_the_one_a_player_shows_is_decoded(tmp_path, capfd, caplog):
    # A 160 x 120 preview track first, the main 320 x 240 (red) one marked default: decoded as a
    # player shows it, not as the first stream; the same in Matroska.
    for name in ("marked.mp4", "marked.mkv"):
        marks = ["-disposition:v:0", "0", "-disposition:v:1", "default"]
        run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=2", "-f", "lavfi", "-i",
                   "color=red:s=320x240:r=10:d=3", "-map", "0", "-map", "1", "-c:v", "libx264", *marks,
                   tmp_path / name)
        with caplog.at_level("INFO"):
            code, lines = actloc(capfd, *decode_args(tmp_path / name, tmp_path / name.replace(".", "_")))
        assert code == 0, lines
        assert f"{name}: 2 video streams; decoding stream 1 (320x240, marked default)" in caplog.text
        info = json.loads((tmp_path / name.replace(".", "_") / "marked.json").read_text())
        assert (info["width"], info["height"], info["frames"], info["source"]["stream"]) == (86, 64, 30, 1)
        red = next(media.iter_frames(tmp_path / name.replace(".", "_") / "marked.mp4"))
        assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60  # the main track's picture


def test_a_video_far_from_the_duration_its_dataset_states_is_refused_before_caching(tmp_path, capfd):
    # A still image renamed .mp4 where the dataset says 120 s: one line naming both durations.
    run_ffmpeg("-f", "lavfi", "-i", "color=gray:s=64x64:d=0.1", "-frames:v", "1", "-c:v", "mjpeg",
               tmp_path / "still.jpg")
    (tmp_path / "video_a.mp4").write_bytes((tmp_path / "still.jpg").read_bytes())
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:r=10:d=9", "-c:v", "libx264", tmp_path / "video_b.mp4")
    truth = {"classes": [], "database": {"video_a": {"subset": "testing", "duration": 120.0},
                                         "video_b": {"subset": "testing", "duration": 10.5}}}
    (tmp_path / "a.json").write_text(json.dumps(truth))
    (tmp_path / "out").mkdir()
    line = fails_cleanly(capfd, tmp_path / "out", *decode_args(tmp_path / "video_a.mp4", tmp_path / "out",
                                                                "--annotations", tmp_path / "a.json"),
                         says=r"video_a.mp4: decodes to 0.10 s, but its dataset states 120.00 s")
    assert "decode.duration_tolerance in config.yaml" in line
    # 9 s where 10.5 are stated: within the 2 s every video is allowed; beyond 5 % of it with a tighter tolerance.
    code, lines = actloc(capfd, *decode_args(tmp_path / "video_b.mp4", tmp_path / "out", "--annotations",
                                             tmp_path / "a.json"))
    assert code == 0, lines
    code, lines = actloc(capfd, *decode_args(tmp_path / "video_b.mp4", tmp_path / "out2", "--annotations",
                                             tmp_path / "a.json", "--duration-tolerance", 0.1))
    assert code == 0, lines
    assert decode.check_duration("x", 9.0, 10.5, 0.05) is None
    with pytest.raises(decode.InputError, match="decodes to 9.00 s, but its dataset states 12.00 s"):
        decode.check_duration("x", 9.0, 12.0, 0.05)


def test_a_source_gone_since_its_earlier_decode_is_one_line(tmp_path, capfd, source_video):
    (tmp_path / "x.mp4").write_bytes(source_video.read_bytes())
    code, lines = actloc(capfd, *decode_args(tmp_path / "x.mp4", tmp_path / "out"))
    assert code == 0, lines
    (tmp_path / "x.mp4").unlink()
    fails_cleanly(capfd, tmp_path / "out", *decode_args(tmp_path / "x.mp4", tmp_path / "out"),
                  says=r"^actloc decode: error: \S+x.mp4: video not found$")
