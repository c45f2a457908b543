import json
import subprocess

import numpy as np

from conftest import THUMOS, env_with_actloc, run_ffmpeg


def actloc(*args, cwd):
    return subprocess.run(["actloc", *map(str, args)], cwd=cwd, env=env_with_actloc(),
                          capture_output=True, text=True)


def test_annotations_error_names_file_and_line_and_writes_nothing(tmp_path):
    done = actloc("annotations", "--type", "thumos14", "--source", THUMOS,
                  "--out", "a.json", "--classes", "c.txt", cwd=tmp_path)
    assert done.returncode == 1
    assert "HighJump_val.txt:190: segment [113.6, 117.3] ends past the video's end" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_annotations_clip_writes_both_files(tmp_path):
    done = actloc("annotations", "--type", "thumos14", "--source", THUMOS, "--out-of-range", "clip",
                  "--out", "a.json", "--classes", "c.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "testing: 213 videos, 3332 instances, 99 ambiguous" in done.stderr
    assert len((tmp_path / "c.txt").read_text().splitlines()) == 20


def test_annotations_of_the_videos_present_and_of_a_selection(tmp_path):
    (tmp_path / "v").mkdir()
    for video in ("video_test_0000004", "video_test_0000006", "video_validation_0000051"):
        (tmp_path / "v" / f"{video}.mp4").touch()
    (tmp_path / "list.txt").write_text("video_test_0000006\n")
    common = ["annotations", "--type", "thumos14", "--source", THUMOS, "--out-of-range", "clip", "--out", "a.json",
              "--classes", "c.txt", "--subsets", "validation", "testing", "--videos", "v"]
    done = actloc(*common, "--missing", "skip", "--select", "testing=@list.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "a.json").read_text())
    assert sorted(written["database"]) == ["video_test_0000006", "video_validation_0000051"]
    assert {s: len(v) for s, v in written["left_out"].items()} == {"testing": 212, "validation": 199}
    assert "testing: 212 videos left out" in done.stderr
    done = actloc(*common, "--select", "testing=video_test_0000004,video_test_0000006", "--out", "b.json",
                  cwd=tmp_path)
    assert done.returncode == 1 and "no source for 199 of the 202 videos of validation, testing" in done.stderr
    assert not (tmp_path / "b.json").exists()
    done = actloc(*common, "--select", "test=video_test_0000004", cwd=tmp_path)
    assert done.returncode == 1 and "--select takes SUBSET=VIDEO,VIDEO... or SUBSET=@FILE" in done.stderr


def test_evaluate_prints_table_and_rejects_bad_predictions(tmp_path):
    gt = {"classes": ["a"], "database": {"v": {"subset": "testing", "annotations": [
        {"segment": [0, 10], "label": "a"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "good.json").write_text(json.dumps({"results": {"v": [{"label": "a", "score": 1, "segment": [0, 10]}]}}))
    (tmp_path / "bad.json").write_text(json.dumps({"results": {"v": [{"label": "a", "score": 1, "segment": [10, 0]}]}}))
    common = ["evaluate", "--annotations", "gt.json", "--subset", "testing", "--out-map", "map.csv",
              "--out-per-class", "per_class.csv"]
    bad = actloc(*common, "--predictions", "bad.json", cwd=tmp_path)
    assert bad.returncode == 1 and "bad.json: video v detection 0" in bad.stderr
    assert not (tmp_path / "map.csv").exists()
    good = actloc(*common, "--predictions", "good.json", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "average 100.00" in " ".join(good.stdout.split())
    assert (tmp_path / "map.csv").is_file() and (tmp_path / "per_class.csv").is_file()


def test_decode_bad_video_exits_with_one_clear_line(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    done = actloc("decode", "broken.mp4", "--out-dir", "out", "--fps", "10", "--short-side", "64", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("actloc decode: error: broken.mp4: cannot be read as a video")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_backbone_and_cache_commands_build_a_store(tmp_path):
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=3", "-c:v", "libx264", tmp_path / "v.mp4")
    done = actloc("backbone", "--name", "t", "--preset", "tiny", "--pixels", "32", "--layers", "2", "4",
                  "--no-temporal", "--out", "b.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "random weights (seed 0)" in done.stderr
    settings = json.loads((tmp_path / "b.json").read_text())
    assert settings["identity"] == "random:0" and settings["layers"] == [2, 4] and not settings["temporal"]
    done = actloc("cache", "v.mp4", "--backbone", "b.json", "--out-dir", "c", "--manifest", "m.json", "--batch", "2",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "c/v.zarr: 5 snippets x 2 layers x 192 channels" in done.stderr
    assert "clip/s" in done.stderr  # the progress bar
    assert json.loads((tmp_path / "m.json").read_text()) == {"v": {"path": "c/v.zarr", "snippets": 5}}
    again = actloc("cache", "v.mp4", "--backbone", "b.json", "--out-dir", "c", "--batch", "2", cwd=tmp_path)
    assert again.returncode == 0 and "c: 1 stores, 0 built now" in again.stderr


def test_cache_of_a_bad_video_is_one_clear_line(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"name": "t", "preset": "tiny"}))
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    done = actloc("cache", "bad.mp4", "--backbone", "b.json", "--out-dir", "c", cwd=tmp_path)
    assert done.returncode == 1
    assert "b.json: not written by `actloc backbone` (no checkpoint, seed, identity" in done.stderr
    assert actloc("backbone", "--name", "t", "--preset", "tiny", "--out", "b.json", cwd=tmp_path).returncode == 0
    done = actloc("cache", "bad.mp4", "--backbone", "b.json", "--out-dir", "c", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("actloc cache: error: bad.mp4: cannot be read")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_import_features_reports_videos_without_features(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"database": {
        "x": {"duration": 3.5, "fps": 8.0, "file": "x"}, "y": {"duration": 3.5, "fps": 8.0, "file": "y"}}}))
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "x.npy", np.ones((4, 3), np.float32))
    common = ["import-features", "npy", "--annotations", "a.json", "--name", "f", "--out-dir", "f", "--index", "f.json"]
    done = actloc(*common, cwd=tmp_path)
    assert done.returncode == 1 and "actloc import-features: error: npy: no features for 1 of 2 videos, e.g. y" \
        in done.stderr
    done = actloc(*common, "--missing", "skip", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "f.json").read_text())["missing"] == ["y"]


def test_train_infer_and_report_commands(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    common = ["--index", index, "--annotations", annotations, "--subset", "training", "--device", "cpu"]
    settings = {"method": "losa", "head": {"width": 16, "levels": 2, "regression_ranges": [[0, 8], [8, 1e4]]},
                "losa": {"reduction": 2, "heads": 2}, "train": {"epochs": 12, "warmup_epochs": 1, "lr": 3e-3}}
    done = actloc("train", *common, "--settings", json.dumps(settings), "--out-model", "model.pt",
                  "--out-log", "log.csv", "--out-summary", "train.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model.pt: losa," in done.stderr and "train losa" in done.stderr  # the summary and the progress bar
    assert "\r" not in done.stderr  # in a log, progress is lines, not carriage returns
    assert "| 39/39 [" in done.stderr.splitlines()[-2]  # its last line: every step (13 epochs of 3) done
    done = actloc("infer", *common, "--model", "model.pt", "--out", "detections.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "detections.json").read_text())["results"]) == 6
    done = actloc("evaluate", "--annotations", annotations, "--predictions", "detections.json", "--subset",
                  "training", "--out-map", "map.csv", "--out-per-class", "pc.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    average = float((tmp_path / "map.csv").read_text().splitlines()[-1].split(",")[1])
    assert average > 0.3, average  # the synthetic actions are plain: a head that learns finds them (0.47 here)
    done = actloc("report", "--methods", "losa", "--maps", "map.csv", "--summaries", "train.json",
                  "--out-csv", "table.csv", "--out-md", "table.md", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("| method |")


def test_train_with_bad_settings_is_one_clear_line(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    done = actloc("train", "--index", index, "--annotations", annotations, "--subset", "training",
                  "--settings", '{"method": "losa", "train": {"epoch": 3}}', "--out-model", "m.pt",
                  "--out-log", "l.csv", "--out-summary", "s.json", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "actloc train: error: training settings:" in done.stderr and "'epoch'" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_lofi_training_without_a_backbone_or_with_a_bad_report_pair_is_one_clear_line(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    done = actloc("train", "--index", index, "--annotations", annotations, "--subset", "training",
                  "--settings", '{"method": "lofi"}', "--out-model", "b.pth", "--out-log", "l.csv",
                  "--out-summary", "s.json", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "actloc train: error: train: method lofi needs --backbone" in done.stderr
    done = actloc("report", "--methods", "lofi", "--maps", "m.csv", "--summaries", "s.json", "--stage-a", "lofi",
                  "--out-csv", "t.csv", "--out-md", "t.md", cwd=tmp_path)
    assert done.returncode == 1 and "--stage-a takes METHOD=PATH, not 'lofi'" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_evaluate_options_from_the_command_line_change_the_scores(tmp_path):
    gt = {"classes": ["a"], "database": {"v": {"subset": "testing", "ambiguous": [[20, 30]], "annotations": [
        {"segment": [0, 10], "label": "a"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    # Two equal scores, the true positive listed first: the official order (NumPy's argsort,
    # reversed) ranks the second first (AP 0.5), `stable` the first (AP 1).
    tied = [{"label": "a", "score": 0.5, "segment": [0, 10]}, {"label": "a", "score": 0.5, "segment": [40, 50]}]
    # A better-scored false positive on the Ambiguous segment: counted, AP 0.5; ignored, AP 1.
    ambiguous = [{"label": "a", "score": 0.9, "segment": [21, 29]}, {"label": "a", "score": 0.5, "segment": [0, 10]}]
    for name, found in (("tied", tied), ("ambiguous", ambiguous)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"results": {"v": found}}))

    def average(*options):
        done = actloc("evaluate", "--annotations", "gt.json", "--subset", "testing", "--out-map", "m.csv",
                      "--out-per-class", "pc.csv", *options, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return float((tmp_path / "m.csv").read_text().splitlines()[-1].split(",")[1])

    assert average("--predictions", "tied.json") == 0.5
    assert average("--predictions", "tied.json", "--ties", "stable") == 1.0
    assert average("--predictions", "ambiguous.json") == 0.5
    assert average("--predictions", "ambiguous.json", "--ambiguous", "ignore") == 1.0


def test_train_settings_from_a_file(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    settings = {"method": "head_only", "head": {"width": 16, "levels": 2, "regression_ranges": [[0, 8], [8, 1e4]]},
                "train": {"epochs": 1, "warmup_epochs": 0, "seed": 7}}
    (tmp_path / "s.json").write_text(json.dumps(settings))
    done = actloc("train", "--index", index, "--annotations", annotations, "--subset", "training", "--device", "cpu",
                  "--settings", "@s.json", "--out-model", "model.pt", "--out-log", "log.csv", "--out-summary",
                  "train.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["seed"] == 7 and summary["epochs"] == 1
    recorded = json.loads((tmp_path / "model.pt.provenance.json").read_text())["settings"]["settings"]
    assert recorded == settings  # the file's JSON, not its name
    done = actloc("train", "--index", index, "--annotations", annotations, "--subset", "training", "--settings",
                  "@none.json", "--out-model", "m2.pt", "--out-log", "l2.csv", "--out-summary", "t2.json", cwd=tmp_path)
    assert done.returncode == 1 and "none.json: file not found" in done.stderr
