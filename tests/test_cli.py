import json
import subprocess

from conftest import THUMOS, env_with_actloc


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
    done = actloc("decode", "broken.mp4", "--out", "out/broken.mp4", "--fps", "10", "--short-side", "64", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("actloc decode: error: broken.mp4: cannot be read as a video")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
