"""actloc detect: a trained model applied to videos of no dataset, by hand and as a workflow target."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from actloc.io import InputError, video_files
from actloc.stages import demo_data, detect
from actloc.stages.evaluate import tiou
from conftest import ROOT, env_with_actloc
from test_workflow import snakemake, tiny_config

METHODS = ("head_only", "losa", "partial")


def actloc(*args, cwd):
    return subprocess.run(["actloc", *map(str, args)], cwd=cwd, env=env_with_actloc(), capture_output=True, text=True)


def by_segment(detections):
    return sorted(detections, key=lambda d: (d["segment"], d["label"], d["score"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny demo DAG with head_only, losa and partial trained and inferred, and a folder of
    unannotated videos (a copy of its test video) that its models detect in through the workflow."""
    folder = tmp_path_factory.mktemp("detect")
    config = tiny_config(folder)
    config["backbones"]["tiny"]["tokens"] = {}
    config["methods"]["partial"] = {"type": "partial", "partial": {"losa": {"heads": 4}}}
    config["datasets"]["demo"]["methods"] = list(METHODS)
    config["datasets"]["mine"] = {"type": "videos", "videos": "mine", "model": "demo", "methods": ["losa"]}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(folder, "results/demo/map.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_detect_gives_what_infer_gave_for_the_same_video(trained, method):
    results = trained / "results" / "demo"
    done = actloc("detect", results / "source" / "demo_test_000.mp4", "--model", results / method / "model.pt",
                  "--out-dir", f"out-{method}", "--batch", 4, "--threads", 1, cwd=trained)
    assert done.returncode == 0, done.stderr
    inferred = json.loads((results / method / "detections.json").read_text())["results"]["demo_test_000"]
    detected = json.loads((trained / f"out-{method}" / "demo_test_000.json").read_text())["results"]["demo_test_000"]
    assert inferred and by_segment(detected) == by_segment(inferred)
    csv = (trained / f"out-{method}" / "demo_test_000.csv").read_text().splitlines()
    assert csv[0] == "start,end,label,score" and len(csv) == 1 + len(detected)
    assert (trained / f"out-{method}" / "demo_test_000.png").read_bytes().startswith(b"\x89PNG")
    # A rerun decodes and caches nothing again.
    again = actloc("detect", results / "source" / "demo_test_000.mp4", "--model", results / method / "model.pt",
                   "--out-dir", f"out-{method}", "--batch", 4, "--threads", 1, cwd=trained)
    assert again.returncode == 0 and "clip/s" not in again.stderr and "decode" not in again.stderr.split("INFO")[0]


@pytest.mark.slow
def test_the_workflow_detects_in_a_folder_of_videos_with_another_datasets_model(trained):
    (trained / "mine").mkdir(exist_ok=True)
    shutil.copy(trained / "results/demo/source/demo_test_000.mp4", trained / "mine" / "my_video.mp4")
    done = snakemake(trained, "results/mine/losa/detections.json")
    assert done.returncode == 0, done.stderr[-3000:]
    detected = json.loads((trained / "results/mine/losa/detections.json").read_text())["results"]
    inferred = json.loads((trained / "results/demo/losa/detections.json").read_text())["results"]
    assert list(detected) == ["my_video"]
    assert by_segment(detected["my_video"]) == by_segment(inferred["demo_test_000"])
    assert (trained / "results/mine/losa/detect/my_video.png").is_file()
    # Its page links the video decoded for detection; the trained dataset's page its test video.
    done = snakemake(trained, "results/mine/losa/view.html", "views")
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"src":"detect/cache/videos/my_video.mp4"' in (trained / "results/mine/losa/view.html").read_text()
    assert '"src":"../videos/demo_test_000.mp4"' in (trained / "results/demo/losa/view.html").read_text()


@pytest.mark.slow
def test_refusals_are_one_line_and_the_good_videos_are_still_done(trained, tmp_path):
    results = trained / "results" / "demo"
    model = results / "losa" / "model.pt"
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    shutil.copy(results / "source" / "demo_test_000.mp4", tmp_path / "good.mp4")
    done = actloc("detect", tmp_path / "broken.mp4", tmp_path / "good.mp4", "--model", model, "--out-dir", "out",
                  cwd=tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 2 and "broken.mp4" in errors[0], done.stderr
    assert errors[1].startswith("actloc detect: error: 1 of 2 videos could not be read")
    assert json.loads((tmp_path / "out" / "good.json").read_text())["results"]["good"]
    assert (tmp_path / "out" / "good.json.provenance.json").is_file()
    # A backbone other than the one the model's cache was built with, by name or by identity.
    other = json.loads((trained / "results/backbones/tiny.json").read_text()) | {"identity": "random:7"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    done = actloc("detect", tmp_path / "good.mp4", "--model", model, "--backbone", tmp_path / "other.json",
                  "--out-dir", "out2", cwd=tmp_path)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert ("other.json: not the backbone" in done.stderr and "identity 'random:7' (the model's cache: 'random:0')"
            in done.stderr)
    assert not (tmp_path / "out2").exists()
    done = actloc("detect", tmp_path / "good.mp4", "--model", tmp_path / "none.pt", "--out-dir", "out3", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.strip() == f"actloc detect: error: {tmp_path / 'none.pt'}: checkpoint not found"


def test_a_folder_stands_for_its_videos_and_two_of_one_name_are_refused(tmp_path):
    for name in ("b.mp4", "a.mkv", "notes.txt"):
        (tmp_path / name).touch()
    assert [p.name for p in video_files([tmp_path])] == ["a.mkv", "b.mp4"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.mp4").touch()
    with pytest.raises(InputError, match="two videos named a"):
        video_files([tmp_path, tmp_path / "sub"])


def test_thresholds_keep_the_best_above_the_floor():
    found = [{"score": s, "label": "x", "segment": [0, 1]} for s in (0.2, 0.9, 0.5, 0.05)]
    assert [d["score"] for d in detect.thresholded(found, top_k=2)] == [0.9, 0.5]
    assert [d["score"] for d in detect.thresholded(found, min_score=0.1)] == [0.9, 0.5, 0.2]


@pytest.mark.slow
def test_the_demos_losa_finds_the_actions_of_a_freshly_rendered_video(tmp_path):
    """The shipped demo's losa (trained as `make demo` trains it, ~4 minutes) on demo videos of
    another seed, never seen: the best detection of each action's class that overlaps it covers
    it at tIoU >= 0.5."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    done = snakemake(tmp_path, "results/demo/losa/model.pt")
    assert done.returncode == 0, done.stderr[-3000:]
    demo_data.generate(tmp_path / "fresh", seed=5, n_train=1, n_test=2)
    truth = json.loads((tmp_path / "fresh" / "annotations.json").read_text())["database"]
    videos = [tmp_path / "fresh" / f"demo_test_00{i}.mp4" for i in range(2)]
    done = actloc("detect", *videos, "--model", "results/demo/losa/model.pt", "--out-dir", "found", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for video in videos:
        found = json.loads((tmp_path / "found" / f"{video.stem}.json").read_text())["results"][video.stem]
        for action in truth[video.stem]["annotations"]:
            same = [d for d in found if d["label"] == action["label"]]
            overlaps = tiou(np.array([d["segment"] for d in same]).reshape(-1, 2), np.array([action["segment"]]))[:, 0]
            assert (overlaps > 0).any(), (video.stem, action)
            best = max((d["score"], overlap) for d, overlap in zip(same, overlaps) if overlap > 0)
            assert best[1] >= 0.5, (video.stem, action, best)
