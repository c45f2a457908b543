"""Real Snakemake runs of the workflow on tiny generated data, in a temporary folder."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate

from actloc import chunks, provenance
from actloc.store.snippets import snippet_count
from actloc.store.stores import open_cache
from conftest import ROOT, THUMOS, activitynet_form_dataset, env_with_actloc, run_ffmpeg

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TINY = {"seed": 1, "n_train": 2, "n_test": 1, "min_seconds": 6, "max_seconds": 8}


# A head small enough to train in seconds on 6-8 s videos (15-20 snippets).
TINY_HEAD = {"width": 16, "levels": 2, "window": 3, "heads": 2, "regression_ranges": [[0, 8], [8, 10000]]}


def tiny_config(tmp_path, **datasets):
    config = {"targets": ["demo"],
              "backbones": {"tiny": {"preset": "tiny", "pixels": 32, "layers": [2, 4], "batch": 4}},
              "methods": {"head_only": {"type": "head_only"}, "losa": {"type": "losa"},
                          "lofi": {"type": "lofi", "lofi": {"budget_mb": 2000, "train": {"epochs": 1}}}},
              "datasets": {"demo": {"type": "demo", "demo": dict(TINY), "chunks": 2, "decode": {"fps": 10, "short_side": 64},
                                    "backbone": "tiny", "head": TINY_HEAD, "methods": ["head_only", "losa", "lofi"],
                                    "train": {"epochs": 30, "warmup_epochs": 1, "lr": 0.003}}, **datasets}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def snakemake_command(tmp_path, *args, profile="none"):
    return [str(arg) for arg in (sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile", "-d", tmp_path,
                                 "--cores", "2", "--workflow-profile", profile, *args)]


def snakemake(tmp_path, *args, profile="none", env=None):
    return subprocess.run(snakemake_command(tmp_path, *args, profile=profile), cwd=tmp_path,
                          env=env or env_with_actloc(), capture_output=True, text=True)


def run_tiny_demo(folder):
    """The tiny demo DAG, run in `folder`."""
    tiny_config(folder)
    done = snakemake(folder, "all", "results/demo/videos.json")
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny demo DAG run once, locally: the reference the other runs are compared with."""
    folder = tmp_path_factory.mktemp("tiny_run")
    run_tiny_demo(folder)
    return folder


# What the tiny demo's one test video guarantees after 30 epochs at lr 3e-3 (measured: head_only 30.0,
# losa 20.0 average mAP): the heads learn. LoFi's stage A is one epoch, its head is only said to detect.
MAP_FLOOR = {"head_only": 0.1, "losa": 0.1}


def learnt(folder, methods):
    """Each method detected something in every test video, and the heads scored above the floor:
    a pipeline emitting nothing, or noise, fails here, not only a run unlike its reference."""
    results = Path(folder) / "results" / "demo"
    for method in methods:
        detections = json.loads((results / method / "detections.json").read_text())["results"]
        assert detections and all(detections.values()), method
        average = pd.read_csv(results / method / "map.csv").set_index("tiou")["mAP"]["average"]
        assert average >= MAP_FLOOR.get(method, 0), (method, average)


def same_results(folder, reference, methods=("head_only", "losa", "lofi")):
    """Every method's detections, mAP and per-class AP are the reference's, byte for byte, and the
    reference learnt."""
    learnt(reference, methods)
    for method in methods:
        for name in ("detections.json", "map.csv", "per_class.csv"):
            ours, theirs = (f / "results" / "demo" / method / name for f in (folder, reference))
            assert ours.read_bytes() == theirs.read_bytes(), ours


def test_schema_fills_defaults_and_accepts_the_shipped_config():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    assert config["datasets"]["thumos"]["out_of_range"] == "clip"
    minimal = {"targets": ["x"], "backbones": {"b": {"preset": "tiny"}},
               "datasets": {"x": {"type": "demo", "decode": {"fps": 5, "short_side": 32}, "backbone": "b"}}}
    validate(minimal, str(SCHEMA))
    assert minimal["device"] == "auto"
    assert minimal["backbones"]["b"] == {"family": "videomae", "preset": "tiny", "seed": 0, "temporal": True,
                                         "precision": "fp32", "batch": 8, "mem_mb": 4000}
    assert minimal["datasets"]["x"]["snippets"] == {"frames": 16, "stride": 4}
    assert minimal["datasets"]["x"]["demo"] == {"seed": 0, "n_train": 192, "n_test": 32,
                                                "min_seconds": 20, "max_seconds": 40}
    assert minimal["datasets"]["x"]["test_subset"] == "testing"
    assert minimal["methods"] == {"head_only": {"type": "head_only"}, "losa": {"type": "losa"}}
    assert minimal["datasets"]["x"]["methods"] == ["head_only", "losa"]
    assert minimal["datasets"]["x"]["head"] == minimal["datasets"]["x"]["train"] == {}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["demo"].update(decod={"fps": 1}), "'decod' was unexpected"),
    (lambda d: d["demo"]["decode"].update(fps=0), "0 is less than or equal to the minimum of 0"),
    (lambda d: d.update(bad={"type": "thumos14", "decode": {"fps": 30, "short_side": 224}, "backbone": "tiny"}),
     "'annotations' is a required property"),
    (lambda d: d["demo"].update(missing="ignore"), "'ignore' is not one of ['error', 'skip']"),
    (lambda d: d["demo"].update(type="kinetics"), "dataset 'demo' has type 'kinetics', which is no dataset type"),
    (lambda d: d["demo"].update(backbone="vit-x"), "dataset 'demo' uses backbone 'vit-x', which is neither"),
    (lambda d: d["demo"].update(snippets={"frames": 15}), "15 is not a multiple of 2"),
    (lambda d: d["demo"].update(snippets={"frames": 16, "stride": 20}),
     "snippets: stride must be within 1..16 (the snippet frames)"),
    (lambda d: d["demo"]["decode"].update(short_side=65), "65 is not a multiple of 2"),
    (lambda d: d["demo"]["decode"].update(damage="ignore"), "'ignore' is not one of ['error', 'warn']"),
    (lambda d: d["demo"]["train"].update(epochs=0), "0 is less than the minimum of 1"),
    (lambda d: d["demo"].update(methods=["lofy"]), "dataset 'demo' lists method 'lofy', which is not under methods"),
    (lambda d: d.update(pub={**d["demo"], "features": {"pub": {"path": "p.h5"}}, "backbone": "pub",
                             "methods": ["lofi"]}),
     "dataset 'pub' trains method 'lofi' (type lofi), which reads the decoded videos (it tunes the backbone), but "
     "its backbone 'pub' is imported features"),
    (lambda d: d["demo"].update(head={"widht": 8}), "'widht' was unexpected"),
])
def test_bad_config_fails_at_parse_time_naming_the_key(tmp_path, change, message):
    config = tiny_config(tmp_path)
    change(config["datasets"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, "-n")
    assert done.returncode != 0
    assert message in done.stderr + done.stdout


@pytest.mark.slow
def test_demo_dag_runs_to_the_table_and_reruns_nothing(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)  # it grows below
    results = tmp_path / "results" / "demo"
    stores = json.loads((results / "cache" / "tiny.json").read_text())["stores"]
    backbone = json.loads((tmp_path / "results" / "backbones" / "tiny.json").read_text())
    assert backbone["identity"] == "random:0" and backbone["layers"] == [2, 4]
    truth = json.loads((results / "annotations.json").read_text())
    index = json.loads((results / "videos.json").read_text())
    assert sorted(index) == sorted(truth["database"]) == ["demo_test_000", "demo_train_000", "demo_train_001"]
    for video, info in index.items():
        assert info["frames"] == round(truth["database"][video]["duration"] * 10)
        assert (info["width"], info["height"]) == (64, 64)  # the source size
        assert (results / "videos" / f"{video}.mp4").is_file()
        store = open_cache(results / "cache" / "tiny" / f"{video}.zarr",
                                 expect={"stride": 4, "fps": 10.0, "pixels": 32, "layers": [2, 4]})
        assert stores[video]["snippets"] == store.snippets == snippet_count(info["frames"], 16, 4)
    # A job per chunk of videos: its log, benchmark and manifest name its videos.
    for chunk, videos in chunks.split(index, 2).items():
        assert (results / "benchmarks" / "decode" / f"{chunk}.tsv").is_file()
        assert sorted(json.loads((results / "videos" / "chunks" / f"{chunk}.json").read_text())) == videos
        assert "clip/s" in (results / "logs" / "cache" / "tiny" / f"{chunk}.log").read_text()
        manifest = json.loads((results / "cache" / "tiny" / "chunks" / f"{chunk}.json").read_text())
        assert {v: entry["snippets"] for v, entry in manifest.items()} == {v: stores[v]["snippets"] for v in videos}
    assert (results / "classes.txt").read_text().split() == truth["classes"]
    table = pd.read_csv(results / "map.csv")
    assert table["method"].tolist() == ["head_only", "losa", "lofi"]
    assert list(table.columns[1:7]) == ["mAP@0.30", "mAP@0.40", "mAP@0.50", "mAP@0.60", "mAP@0.70", "avg"]
    assert table["trainable_params"].iloc[1] > table["trainable_params"].iloc[0] > 0
    assert (table["peak_memory_mb"] > 0).all() and (table["train_minutes"] > 0).all()
    assert table["stage_a_minutes"].isna().tolist() == [True, True, False]
    assert table["stage_a_params"].iloc[2] > table["trainable_params"].iloc[2]  # backbone and head, then the head
    assert (results / "map.md").read_text().startswith("| method |")
    # LoFi's stage B: the tuned backbone cached at full fidelity under its own name and hash.
    tuned = json.loads((results / "lofi" / "backbone.json").read_text())
    assert tuned["identity"].startswith("sha256:") and tuned["pixels"] == 32
    assert len(pd.read_csv(results / "lofi" / "stage_a_log.csv")) == 2
    for video in index:
        open_cache(results / "cache" / "lofi" / f"{video}.zarr",
                         expect={"backbone": "lofi", "identity": tuned["identity"], "pixels": 32})
    for method in ("head_only", "losa", "lofi"):
        assert len(pd.read_csv(results / method / "train_log.csv")) == 1 + 30  # warm-up and cosine epochs
        detections = json.loads((results / method / "detections.json").read_text())["results"]
        assert list(detections) == ["demo_test_000"]  # the test subset only
        own = pd.read_csv(results / method / "map.csv")
        assert own["mAP"].iloc[-1] * 100 == pytest.approx(table["avg"].iloc[table["method"].tolist().index(method)])
        assert not (results / method / "checkpoint.pt").exists()
    # Plots, and a record of what made each result beside it.
    for name in ("map_vs_tiou", "per_class_ap", "timelines"):
        assert (results / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    record = json.loads((results / "losa" / "model.pt.provenance.json").read_text())
    assert record["settings"]["settings"]["train"] == {"epochs": 30, "warmup_epochs": 1, "lr": 0.003}
    assert record["command"][1] == "train"
    for path in (results / "losa" / "detections.json", results / "map.csv", results / "cache" / "tiny.json"):
        assert json.loads(provenance.path_of(path).read_text())["file"] == path.name
    again = snakemake(tmp_path, "all", "results/demo/videos.json")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # snakemake --report: one HTML file with the tables and plots.
    html = snakemake(tmp_path, "--report", "report.html")
    assert html.returncode == 0, html.stderr[-3000:]
    page = (tmp_path / "report.html").read_text()
    assert all(name in page for name in ("map.csv", "per_class.csv", "map_vs_tiou.png", "timelines.png"))
    # One more training video: only it is rendered; the videos made before are left alone.
    made = {v: (results / "source" / f"{v}.mp4").stat().st_mtime_ns for v in index}
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["datasets"]["demo"]["demo"]["n_train"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    grown = snakemake(tmp_path, "results/demo/videos.json")
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert {v: (results / "source" / f"{v}.mp4").stat().st_mtime_ns for v in index} == made
    assert sorted(json.loads((results / "videos.json").read_text())) == sorted(index) + ["demo_train_002"]


@pytest.mark.slow
@pytest.mark.parametrize("family, pixels, architecture", [
    ("videomae", 32, {"final_norm": "fc_norm", "layer_scale": False}),
    ("internvideo2", 28, {"qkv_bias": False, "qk_norm": True, "layer_scale": True})])
def test_partial_trains_from_the_block_tokens_through_the_workflow(tmp_path, family, pixels, architecture):
    config = tiny_config(tmp_path)
    config["backbones"]["tiny"].update(family=family, pixels=pixels, tokens={})
    config["methods"]["partial"] = {"type": "partial", "partial": {"losa": {"heads": 4}}}
    config["datasets"]["demo"]["methods"] = ["head_only", "partial"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, "all")
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results" / "demo"
    assert pd.read_csv(results / "map.csv")["method"].tolist() == ["head_only", "partial"]
    store = open_cache(results / "cache" / "tiny" / "demo_test_000.zarr")
    assert store.attrs["family"] == family and store.attrs["block_tokens"] == {"block": 2, "grid": 2, **architecture}
    assert "partial: blocks 3..4 on 2 x 2 tokens" in (results / "logs" / "train" / "partial.log").read_text()
    assert list(json.loads((results / "partial" / "detections.json").read_text())["results"]) == ["demo_test_000"]


def test_the_venv_snakemake_runs_its_own_actloc_from_a_plain_shell(tmp_path):
    tiny_config(tmp_path)
    plain = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}  # no .venv/bin on PATH
    done = snakemake(tmp_path, "results/demo/annotations.json", env=plain)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "results/demo/annotations.json").read_text())["classes"]


@pytest.mark.slow
def test_source_videos_found_by_file_name_and_missing_ones_named(tmp_path):
    anet = {"database": {"abc": {"subset": "validation", "duration": 2.0,
                                 "annotations": [{"segment": [0.5, 1.5], "label": "Run"}]},
                         "unlabelled": {"subset": "testing", "duration": 2.0}}}  # not trained or tested on
    (tmp_path / "anet.json").write_text(json.dumps(anet))
    (tmp_path / "anet_videos").mkdir()
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=30:d=2", "-c:v", "libx264", tmp_path / "anet_videos" / "v_abc.mkv")
    tiny_config(tmp_path,
                thumos={"type": "thumos14", "annotations": str(THUMOS), "videos": "thumos_videos",
                        "out_of_range": "clip", "decode": {"fps": 30, "short_side": 224}, "backbone": "tiny"},
                anet={"type": "activitynet", "annotations": "anet.json", "videos": "anet_videos",
                      "test_subset": "validation", "decode": {"fps": 5, "short_side": 32}, "backbone": "tiny"})
    done = snakemake(tmp_path, "results/anet/videos.json")
    assert done.returncode == 0, done.stderr[-3000:]
    log = tmp_path / "results/thumos/logs/annotations.log"
    missing = snakemake(tmp_path, "results/thumos/annotations.json")
    assert missing.returncode != 0
    assert "thumos_videos: no such folder, where the dataset's videos should be" in log.read_text()
    (tmp_path / "thumos_videos").mkdir()
    missing = snakemake(tmp_path, "results/thumos/annotations.json")
    assert missing.returncode != 0
    assert ("thumos_videos: no source for 213 of the 213 videos of testing, training (first: video_test_0000004, "
            in log.read_text())
    assert "set missing: skip in the dataset's config entry" in log.read_text()
    assert json.loads((tmp_path / "results/anet/videos.json").read_text()).keys() == {"abc"}
    assert json.loads((tmp_path / "results/anet/videos.json").read_text())["abc"]["frames"] == 10


@pytest.mark.slow
def test_lint_and_format_are_clean():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
                          cwd=ROOT, capture_output=True, text=True, env=env_with_actloc())
    assert lint.returncode == 0 and "good condition" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    fmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


# THUMOS-14 videos among the shortest of each subset (their stated durations, 9-20 s), with actions.
THUMOS_PRESENT = {"video_validation_0000190": 8.8, "video_validation_0000854": 16.8,
                  "video_validation_0000986": 20.0666666666667, "video_test_0000062": 14.9333333333333,
                  "video_test_0000698": 17.0, "video_test_0001433": 19.6}


@pytest.mark.slow
def test_thumos14_with_the_videos_present_evaluates_them_and_says_so(tmp_path):
    """The official THUMOS-14 files, 6 of its 413 videos (generated at their stated durations), a
    tiny checkpoint in the official key layout: the run takes the videos present, and its results
    stand on the 3 test videos, say so, and equal the evaluator on those videos' ground truth."""
    from test_backbone import official_state

    from actloc.backbones import presets
    from actloc.datasets import thumos14
    from actloc.stages import evaluate

    folder = tmp_path / "thumos_videos"
    folder.mkdir()
    for video, seconds in THUMOS_PRESENT.items():
        run_ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=64x48:r=10:d={seconds}", "-c:v", "libx264", "-preset",
                   "ultrafast", folder / f"{video}.mp4")
    torch.save(official_state(presets()["tiny"]), tmp_path / "vit_tiny_official.pth")
    config = tiny_config(tmp_path, thumos={
        "type": "thumos14", "annotations": str(THUMOS), "videos": "thumos_videos", "missing": "skip",
        "out_of_range": "clip", "train_subset": "validation", "test_subset": "testing", "chunks": 2,
        "decode": {"fps": 10, "short_side": 32}, "backbone": "official", "methods": ["head_only", "losa"],
        "head": TINY_HEAD, "train": {"epochs": 2, "warmup_epochs": 1}})
    config["backbones"]["official"] = {"preset": "tiny", "checkpoint": "vit_tiny_official.pth", "pixels": 32,
                                       "layers": [2, 4], "batch": 4}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, "results/thumos/map.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results" / "thumos"
    truth = json.loads((results / "annotations.json").read_text())
    assert sorted(truth["database"]) == sorted(THUMOS_PRESENT)
    assert {s: len(v) for s, v in truth["left_out"].items()} == {"validation": 197, "testing": 210}
    assert "on 3 of the 213 testing videos" in (results / "map.md").read_text()
    table = pd.read_csv(results / "map.csv")
    assert table[["videos", "benchmark_videos"]].drop_duplicates().values.tolist() == [[3, 213]]
    # Each method's mAP is the evaluator's on the ground truth of exactly the 3 test videos present.
    official = thumos14.load(THUMOS, out_of_range="clip")
    official["database"] = {v: e for v, e in official["database"].items() if v in THUMOS_PRESENT}
    for method in ("head_only", "losa"):
        detections = json.loads((results / method / "detections.json").read_text())
        assert sorted(detections["results"]) == ["video_test_0000062", "video_test_0000698", "video_test_0001433"]
        expected = evaluate.summarize(evaluate.evaluate(official, evaluate.prediction_table(detections), "testing",
                                                        evaluate.THRESHOLDS["thumos"]))
        assert pd.read_csv(results / method / "map.csv")["mAP"].tolist() == expected["mAP"].tolist()
    # Another video put in the folder is taken by the next run: the annotations are made again.
    shutil.copy(folder / "video_test_0000062.mp4", folder / "video_test_0000846.mp4")
    assert "annotations" in planned_jobs(snakemake(tmp_path, "-n", "results/thumos/map.csv"))


@pytest.mark.slow
def test_imported_features_become_the_cache_without_videos(tmp_path):
    anet = {"database": {v: {"subset": "validation", "duration": 8.0, "fps": 4.0,
                             "annotations": [{"segment": [0.5, 1.5], "label": "Run"}]} for v in ("a", "b", "c")}}
    (tmp_path / "anet.json").write_text(json.dumps(anet))
    with h5py.File(tmp_path / "feats.h5", "w") as f:  # c has none
        f["v_a"], f["v_b"] = np.ones((8, 6)), np.zeros((8, 6))
    # No videos and no decode: the features' own frame rate and protocol (a step a second).
    dataset = {"type": "activitynet", "annotations": "anet.json", "missing": "skip",
               "train_subset": "validation", "test_subset": "validation", "backbone": "pub",
               "features": {"pub": {"path": "feats.h5", "fps": 4, "frames": 4, "stride": 4}},
               "methods": ["head_only"], "head": TINY_HEAD, "train": {"epochs": 1, "warmup_epochs": 1}}
    tiny_config(tmp_path, anet=dataset)
    done = snakemake(tmp_path, "results/anet/map.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rule decode" not in done.stdout + done.stderr and "rule backbone" not in done.stdout + done.stderr
    assert pd.read_csv(tmp_path / "results/anet/map.csv")["method"].tolist() == ["head_only"]
    assert "on 2 of the 3 validation videos" in (tmp_path / "results/anet/map.md").read_text()
    stores = json.loads((tmp_path / "results/anet/cache/pub.json").read_text())["stores"]
    assert {v: s["snippets"] for v, s in stores.items()} == {"a": 8, "b": 8}
    store = open_cache(tmp_path / stores["a"]["path"],
                             expect={"layers": [-1], "backbone": "pub", "identity": "imported:feats.h5",
                                     "fps": 4.0, "stride": 4, "snippet_frames": 4})
    assert store.read()["pooled"].sum() == 48
    # LoSA on them is refused when the config is parsed, in one line naming what would work.
    tiny_config(tmp_path, anet=dataset | {"methods": ["head_only", "losa"]})
    done = snakemake(tmp_path, "-n", "results/anet/map.csv")
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "trains method 'losa'" in line]
    assert len(lines) == 1 and lines[0].endswith("so make the dataset's backbone an entry of backbones"), \
        done.stderr[-3000:]
    assert "imported features are one layer without tokens and without videos: train head_only" in lines[0]


@pytest.mark.slow
def test_activitynet_protocol_fixed_length_and_a_classifier_file_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    database, features, scores = {}, {}, {}
    for i, (video, subset) in enumerate([("a", "training"), ("b", "training"), ("c", "validation")]):
        label = ["Run", "Jump"][i % 2]
        database[video] = {"subset": subset, "duration": 20.0, "fps": 4.0,
                           "annotations": [{"segment": [5.0, 12.0], "label": label}]}
        feats = rng.normal(0, 0.1, (20, 6))
        feats[4:11, 0] += 3.0  # snippets of the action (4 fps, stride 4: a snippet a second)
        features[f"v_{video}"] = feats
        scores[f"v_{video}"] = [0.9, 0.1] if label == "Run" else [0.2, 0.8]
    (tmp_path / "anet.json").write_text(json.dumps({"database": database}))
    (tmp_path / "cuhk.json").write_text(json.dumps({"results": scores, "class": ["Run", "Jump"]}))
    with h5py.File(tmp_path / "feats.h5", "w") as f:
        for name, feats in features.items():
            f[name] = feats
    tiny_config(tmp_path, anet={"type": "activitynet", "annotations": "anet.json",
                                "train_subset": "training", "test_subset": "validation", "eval_preset": "activitynet",
                                "backbone": "pub", "snippets": {"frames": 4, "stride": 4},
                                "features": {"pub": {"path": "feats.h5"}}, "methods": ["head_only"],
                                "classifier": {"path": "cuhk.json", "top_k": 1},
                                "head": TINY_HEAD, "train": {"epochs": 2, "warmup_epochs": 1, "fixed_steps": 16}})
    done = snakemake(tmp_path, "results/anet/map.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    model = torch.load(tmp_path / "results/anet/head_only/model.pt", weights_only=True)
    assert model["classes"] == ["action"] and model["settings"]["train"]["fixed_steps"] == 16
    detections = json.loads((tmp_path / "results/anet/head_only/detections.json").read_text())["results"]["c"]
    assert detections and {d["label"] for d in detections} == {"Run"}  # c's top class in the file (0.9 vs 0.1)
    assert all(0 <= d["segment"][0] < d["segment"][1] <= 20.0 for d in detections)
    thresholds = pd.read_csv(tmp_path / "results/anet/head_only/map.csv", dtype=str)["tiou"]
    assert thresholds.iloc[0] == "0.50"  # ActivityNet's


def planned_jobs(done):
    """{rule: jobs} of a dry run's job stats table."""
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).split("Job stats:")[1].splitlines()[3:]
    rows = [line.split() for line in lines[:next(i for i, line in enumerate(lines) if line.startswith("total"))]]
    return {rule: int(count) for rule, count in rows}


DOWNSTREAM = {"report": 1, "plots": 1, "all": 1}


# The tiny demo's 3 videos make this many chunks of 2 (two, or one if they all hash alike).
TINY_CHUNKS = len(chunks.split(["demo_test_000", "demo_train_000", "demo_train_001"], 2))


@pytest.mark.slow
@pytest.mark.parametrize("change, planned", [
    # A method's training setting: only that method trains again, and what follows from it.
    (lambda c: c["methods"]["losa"].update(train={"lr": 0.01}), {"train": 1, "infer": 1, "evaluate": 1} | DOWNSTREAM),
    # Another backbone (here its random seed): every chunk's cache on, LoFi's stage A included.
    (lambda c: c["backbones"]["tiny"].update(seed=1),
     {"backbone": 1, "cache": 2 * TINY_CHUNKS, "cache_index": 2, "lofi": 1, "train": 3, "infer": 3, "evaluate": 3}
     | DOWNSTREAM),
    # Another snippet stride: the same, but the backbone's description stands.
    (lambda c: c["datasets"]["demo"].update(snippets={"frames": 16, "stride": 8}),
     {"cache": 2 * TINY_CHUNKS, "cache_index": 2, "lofi": 1, "train": 3, "infer": 3, "evaluate": 3} | DOWNSTREAM),
])
def test_a_changed_setting_reruns_only_what_depends_on_it(tiny_run, tmp_path, change, planned):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    change(config)
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(snakemake(tiny_run, "--configfile", tmp_path / "changed.yaml", "--dry-run", "all")) == planned


@pytest.mark.slow
def test_adding_or_removing_a_video_reruns_its_chunk_alone(tmp_path):
    config = tiny_config(tmp_path)
    config["datasets"]["demo"].update(chunks=4, methods=["head_only"])
    config["datasets"]["demo"]["demo"]["n_train"] = 8
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/demo/cache/tiny.json"
    first = snakemake(tmp_path, target)
    assert first.returncode == 0, first.stderr[-3000:]
    stores = tmp_path / "results" / "demo" / "cache" / "tiny"
    made = {p.name: p.stat().st_mtime_ns for p in stores.glob("*.zarr")}
    assert len(made) == 9
    for n_train, present in ((9, True), (8, False)):  # demo_train_008 comes, then goes
        config["datasets"]["demo"]["demo"]["n_train"] = n_train
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        assert snakemake(tmp_path, "results/demo/annotations.json").returncode == 0
        assert planned_jobs(snakemake(tmp_path, "--dry-run", target)) == \
            {"demo_data": 1, "decode": 1, "cache": 1, "cache_index": 1}
        done = snakemake(tmp_path, target)
        assert done.returncode == 0, done.stderr[-3000:]
        assert {name: made[name] == stores.joinpath(name).stat().st_mtime_ns for name in made} == \
            dict.fromkeys(made, True)  # no store made before was touched
        index = json.loads((tmp_path / target).read_text())["stores"]
        assert ("demo_train_008" in index) == present and len(index) == 9 + present


def activitynet_plan_folder(folder, videos):
    """The shipped config's `anet` dataset on a generated ActivityNet-form dataset of `videos`
    videos with placeholder sources and checkpoint, its annotations made: ready to plan."""
    annotations, sources = activitynet_form_dataset(folder, videos)
    (folder / "checkpoint.pth").touch()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["targets"] = ["anet"]
    config["datasets"]["anet"].update(annotations=str(annotations), videos=str(sources))
    config["backbones"][config["datasets"]["anet"]["backbone"]]["checkpoint"] = str(folder / "checkpoint.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(folder, "results/anet/annotations.json")
    assert done.returncode == 0, done.stderr[-3000:]
    return config


@pytest.fixture(scope="module")
def activitynet_2k(tmp_path_factory):
    folder = tmp_path_factory.mktemp("anet_2k")
    return folder, activitynet_plan_folder(folder, 2000)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["none", ROOT / "profiles" / "slurm"])
def test_an_activitynet_size_dataset_plans_a_job_per_chunk(activitynet_2k, profile):
    folder, config = activitynet_2k
    database = json.loads((folder / "results/anet/annotations.json").read_text())["database"]
    decoded = [v for v, entry in database.items() if entry["subset"] in ("training", "validation")]
    assert len(decoded) == 1500
    count = len(chunks.split(decoded, config["datasets"]["anet"]["chunks"]))
    assert 250 < count <= 300
    done = snakemake(folder, "--dry-run", "results/anet/map.csv", profile=profile)
    assert planned_jobs(done) == {"backbone": 1, "decode": count, "cache": count, "cache_index": 1,
                                  "train": 2, "infer": 2, "evaluate": 2, "report": 1}


@pytest.mark.slow
@pytest.mark.parametrize("device, gpu", [("cuda", "1"), ("auto", "0")])
def test_jobs_ask_for_memory_time_and_a_gpu_only_where_cuda_is_asked_for(tiny_run, tmp_path, device, gpu):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text()) | {"device": device}
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tiny_run, "all", "--configfile", tmp_path / "device.yaml", "--dry-run", "--forcerun", "demo_data")
    assert done.returncode == 0, done.stderr[-3000:]
    resources = {rule: dict(re.findall(r"(\w+)=(\w+)", line)) for rule, line in
                 re.findall(r"^ *(?:local)?rule (\w+):\n(?: +.*\n)*? +resources: (.*)$", done.stdout, re.M)}
    assert [resources[rule]["gpu"] for rule in ("cache", "lofi", "train", "infer")] == [gpu] * 4
    assert "gpu" not in resources["decode"]
    assert (resources["cache"]["mem_mb"], resources["lofi"]["mem_mb"], resources["train"]["mem_mb"]) == \
        ("4000", "8000", "16000")  # the backbone's mem_mb (default), twice that for stage A
    assert resources["train"]["runtime"] == "720" and resources["decode"]["runtime"] == "10"  # a chunk job's floor


@pytest.mark.slow
def test_the_same_config_twice_gives_identical_results_and_records(tiny_run, tmp_path):
    run_tiny_demo(tmp_path)
    same_results(tmp_path, tiny_run)
    for path in ("results/demo/losa/detections.json", "results/demo/lofi/backbone.pth", "results/demo/losa/map.csv"):
        record = provenance.path_of(path)
        assert (tmp_path / record).read_bytes() == (tiny_run / record).read_bytes()
    tables = [pd.read_csv(f / "results/demo/map.csv") for f in (tmp_path, tiny_run)]
    mAP = [c for c in tables[0].columns if c.startswith("mAP@") or c == "avg"]
    pd.testing.assert_frame_equal(tables[0][mAP], tables[1][mAP])  # its time and memory columns differ


def kill_tree(pid):
    """SIGKILL a process and every descendant at once, as a node that dies would."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for process in tree:
        try:
            os.kill(process, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_and_kill(folder, *args, when):
    """Start Snakemake in `folder` and kill it and its jobs with SIGKILL as soon as `when()` holds."""
    process = subprocess.Popen(snakemake_command(folder, *args), cwd=folder, env=env_with_actloc(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not when():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    kill_tree(process.pid)
    process.wait()


def crash_config(folder):
    """head_only alone, long enough in training (60 epochs of ~0.05 s) to be killed in the middle."""
    config = tiny_config(folder)
    config["datasets"]["demo"].update(methods=["head_only"], train={"epochs": 60, "warmup_epochs": 1, "lr": 0.003})
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def rerun(folder):
    """What a user does after a crash: unlock (Snakemake died holding its lock) and run again."""
    assert snakemake(folder, "--unlock").returncode == 0
    done = snakemake(folder, "--rerun-incomplete", "all")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def crash_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    crash_config(folder)
    done = snakemake(folder, "all")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_killed_while_caching_no_store_is_taken_for_complete_and_a_rerun_completes(crash_reference, tmp_path):
    crash_config(tmp_path)
    stores = tmp_path / "results" / "demo" / "cache" / "tiny"
    run_and_kill(tmp_path, "all", when=lambda: any(stores.glob(".*.tmp*.zarr")))
    assert any(stores.glob(".*.tmp*.zarr"))  # a store was being written
    for store in stores.glob("[!.]*.zarr"):  # and any under its final name is whole
        open_cache(store)
    assert not (tmp_path / "results" / "demo" / "map.csv").exists()
    rerun(tmp_path)
    assert not list(stores.glob(".*"))  # the killed writer's temporary is gone
    same_results(tmp_path, crash_reference, ["head_only"])


@pytest.mark.slow
def test_killed_while_training_a_rerun_resumes_and_ends_where_an_uninterrupted_run_does(crash_reference, tmp_path):
    # The reference's videos and cache, without anything trained yet.
    shutil.copytree(crash_reference, tmp_path, dirs_exist_ok=True)
    method = tmp_path / "results" / "demo" / "head_only"
    for trained in (method, tmp_path / "results" / "demo" / "plots"):
        shutil.rmtree(trained)
    (tmp_path / "results" / "demo" / "map.csv").unlink()
    run_and_kill(tmp_path, "all", when=(method / "checkpoint.pt").exists)
    assert not (method / "model.pt").exists() and (method / "checkpoint.pt").exists()
    rerun(tmp_path)
    assert "checkpoint.pt: resuming after epoch" in (tmp_path / "results/demo/logs/train/head_only.log").read_text()
    assert not (method / "checkpoint.pt").exists()
    same_results(tmp_path, crash_reference, ["head_only"])


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM on localhost (tests/localhost_slurm.sh), stopped afterwards."""
    folder = tmp_path_factory.mktemp("slurm")
    script = ROOT / "tests" / "localhost_slurm.sh"
    started = subprocess.run([script, "start", folder], capture_output=True, text=True)
    if started.returncode == 3:
        if os.environ.get("CI") == "true":  # CI installs SLURM (.ci/run): a skip there would hide a failure
            pytest.fail(f"no SLURM to test with in CI: {started.stderr.strip()}")
        pytest.skip(f"no SLURM to test with: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    yield {**env_with_actloc(), "SLURM_CONF": str(folder / "slurm.conf")}
    subprocess.run([script, "stop", folder], check=True)


def slurm_jobs(done):
    """{Snakemake job: its SLURM job ids} of a run: a job retried after a failure on the cluster
    (the profile's `retries`) has more than one."""
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    jobs = {}
    for job, slurm_job in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", done.stdout + done.stderr):
        jobs.setdefault(job, []).append(slurm_job)
    return jobs


def ran_as(log, submitted):
    """Whether a rule's log names one of the submitted SLURM jobs."""
    job = re.search(r"SLURM job (\d+) on ", log.read_text())
    return bool(job) and any(job.group(1) in ids for ids in submitted.values())


def planned_gpus(folder, device):
    """{rule: the `gpu` resource of its jobs} in a dry run of the tiny demo through profiles/slurm."""
    done = snakemake(folder, "-n", "all", "--config", f"device={device}", profile=ROOT / "profiles" / "slurm")
    assert done.returncode == 0, done.stderr[-3000:]
    gpus = {}
    for rule, block in re.findall(r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)", done.stdout, re.M | re.S):
        found = re.search(r"resources: .*?\bgpu=(\d+)", block)
        gpus.setdefault(rule, set()).add(int(found.group(1)) if found else 0)
    return gpus


@pytest.mark.slow
def test_with_device_cuda_the_backbone_and_detector_jobs_ask_slurm_for_a_gpu_and_no_other_does(tmp_path):
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.utils import set_gres_string

    tiny_config(tmp_path)
    done = snakemake(tmp_path, "results/demo/annotations.json")  # past the checkpoint: every job planned
    assert done.returncode == 0, done.stderr[-3000:]
    gpus = planned_gpus(tmp_path, "cuda")
    assert set(gpus) >= {"demo_data", "decode", "decode_index", "backbone", "cache", "cache_index", "lofi", "train",
                         "infer", "evaluate", "report", "plots"}
    wanted = {"cache", "lofi", "train", "infer"}  # and detect, with a dataset of videos
    assert {rule: count for rule, count in gpus.items() if count != {0}} == {rule: {1} for rule in wanted}

    class Resources(dict):
        __getattr__ = dict.__getitem__

    for rule, (count,) in gpus.items():  # what the executor plugin makes of them: its sbatch arguments
        flags = set_gres_string(SimpleNamespace(resources=Resources({"gpu": count} if count else {})))
        assert flags == (" --gpus=1" if rule in wanted else ""), rule
    assert all(count == {0} for count in planned_gpus(tmp_path, "cpu").values())
    detect = (ROOT / "workflow" / "rules" / "detect.smk").read_text()
    assert "gpu=GPU," in detect  # the detect rule asks as the others do


def test_the_default_profile_runs_gpu_jobs_one_at_a_time():
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile["resources"] == ["gpu=1"] and "executor" not in profile


@pytest.mark.slow
def test_the_demo_dag_through_slurm_gives_the_local_results(tiny_run, slurm, tmp_path):
    tiny_config(tmp_path)
    done = snakemake(tmp_path, "all", "--slurm-init-seconds-before-status-checks", "2",
                     profile=ROOT / "profiles" / "slurm", env=slurm)
    submitted = slurm_jobs(done)
    # A job per chunk of demo_data and decode, and of cache for each backbone (the frozen one and
    # LoFi's tuned one); backbone, stage A, 3 trainings, 3 inferences; the bookkeeping rules ran here.
    assert len(submitted) == 4 * TINY_CHUNKS + 1 + 1 + 3 + 3
    logs = tmp_path / "results" / "demo" / "logs"
    slurm_logs = [*logs.glob("demo_data/*.log"), *logs.glob("decode/*.log"), *logs.glob("cache/*/*.log"),
                  logs / "lofi" / "lofi.log", *logs.glob("train/*.log"), *logs.glob("infer/*.log"),
                  tmp_path / "results" / "logs" / "backbone" / "tiny.log"]
    assert len(slurm_logs) == len(submitted)
    for log in slurm_logs:
        assert ran_as(log, submitted), log
    assert "SLURM job" not in (logs / "report.log").read_text()
    # The cluster got each rule's resources, e.g. a training's memory.
    train_job = re.search(r"SLURM job (\d+) on ", (logs / "train" / "losa.log").read_text()).group(1)
    shown = subprocess.run(["scontrol", "show", "job", train_job], env=slurm, capture_output=True, text=True).stdout
    assert "MinMemoryNode=16000M" in shown and "NumCPUs=1" in shown
    same_results(tmp_path, tiny_run)


@pytest.mark.slow
def test_200_videos_through_slurm_take_a_job_per_chunk_and_give_the_local_results(slurm, tmp_path):
    (tmp_path / "local").mkdir()
    config = tiny_config(tmp_path / "local")
    demo = config["datasets"]["demo"]
    demo["demo"].update(n_train=150, n_test=50)
    demo.update(methods=["head_only", "losa"], train={"epochs": 1, "warmup_epochs": 1, "lr": 0.003})
    runs = {}
    for name, profile, env in (("local", "none", None), ("slurm", ROOT / "profiles" / "slurm", slurm)):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        runs[name] = snakemake(folder, "all", "--slurm-init-seconds-before-status-checks", "2", profile=profile,
                               env=env)
        assert runs[name].returncode == 0, (runs[name].stdout + runs[name].stderr)[-5000:]
    submitted = slurm_jobs(runs["slurm"])
    # demo_data, decode and cache: 2 chunk jobs each; backbone; 2 trainings and 2 inferences.
    assert len(submitted) == 2 + 2 + 2 + 1 + 2 + 2
    assert len(json.loads((tmp_path / "slurm/results/demo/cache/tiny.json").read_text())["stores"]) == 200
    for log in (tmp_path / "slurm/results/demo/logs").glob("cache/tiny/*.log"):
        assert ran_as(log, submitted), log
    same_results(tmp_path / "slurm", tmp_path / "local", ["head_only", "losa"])


@pytest.mark.parametrize("ci, code", [("true", 1), ("", 0)])
def test_a_slurm_that_cannot_be_installed_fails_ci_and_is_skipped_elsewhere(ci, code):
    # No tool on PATH: neither SLURM nor apt-get is found.
    done = subprocess.run(["/bin/bash", ROOT / "tests" / "localhost_slurm.sh", "install"], capture_output=True,
                          text=True, env={"PATH": "/nonexistent", "CI": ci})
    assert done.returncode == code, done.stderr
    assert ("CI must run the SLURM tests" if ci else "the SLURM tests will be skipped") in done.stderr


@pytest.mark.slow
def test_a_cache_kept_by_touch_from_another_stride_is_refused_naming_the_setting(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["datasets"]["demo"]["snippets"] = {"frames": 16, "stride": 8}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # What a user does to skip work: the stride-4 stores are marked up to date.
    assert snakemake(tmp_path, "--touch", "results/demo/cache/tiny.json").returncode == 0
    done = snakemake(tmp_path, "results/demo/head_only/model.pt")
    assert done.returncode != 0
    lines = [line for line in (tmp_path / "results/demo/logs/train/head_only.log").read_text().splitlines()
             if "error" in line]
    assert len(lines) == 1 and "built with other settings (stride is 4 where this run's settings say 8)" in lines[0]
    assert lines[0].endswith("delete it and rerun the cache stage (snakemake --forcerun cache ...)")


@pytest.mark.slow
def test_the_datasets_ambiguous_setting_reaches_the_evaluate_command(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["datasets"]["demo"]["ambiguous"] = "ignore"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, "-n", "-p", "results/demo/head_only/map.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line for line in (done.stdout + done.stderr).splitlines() if "actloc evaluate" in line]
    assert len(commands) == 1 and "--ambiguous ignore" in commands[0]


def test_the_conda_env_pins_what_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "envs" / "actloc.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == project["dependencies"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == f"python={sys.version_info.major}.{sys.version_info.minor}"
    assert project["requires-python"] == ">=3.11" and sys.version_info >= (3, 11)


@pytest.mark.parametrize("folder, installs", [("checkout", True), ("elsewhere", False)])
def test_the_conda_post_deploy_installs_the_checkout_editable_and_only_from_it(tmp_path, folder, installs):
    """Snakemake runs the script with the new environment's pip first on PATH, from its own folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/pip-args\n')
    (bin_dir / "pip").chmod(0o755)
    cwd = ROOT if folder == "checkout" else tmp_path
    run = subprocess.run(["bash", ROOT / "envs" / "actloc.post-deploy.sh"], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    if installs:
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "pip-args").read_text().split() == ["install", "--no-deps", "--editable", str(ROOT)]
    else:
        assert run.returncode == 1 and "not the actloc checkout" in run.stderr
        assert not (tmp_path / "pip-args").exists()


@pytest.mark.slow
def test_a_training_on_two_gpus_runs_as_two_processes_and_follows_one(tiny_run, tmp_path):
    """train.gpus: 2 (here CPU processes) trains that method again (its result differs in float
    rounding), under torchrun."""
    shutil.copytree(tiny_run, tmp_path, dirs_exist_ok=True)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["methods"]["losa"]["train"] = {"gpus": 2}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(snakemake(tmp_path, "-n", "all")) == {"train": 1, "infer": 1, "evaluate": 1} | DOWNSTREAM
    done = snakemake(tmp_path, "-p", "results/demo/losa/model.pt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchrun --standalone --nproc-per-node 2 --no-python actloc train" in done.stdout + done.stderr
    assert "data-parallel training: 2 processes" in (tmp_path / "results/demo/logs/train/losa.log").read_text()
    one, two = (pd.read_csv(f / "results/demo/losa/train_log.csv") for f in (tiny_run, tmp_path))
    torch.testing.assert_close(torch.tensor(two["loss"].values), torch.tensor(one["loss"].values), rtol=1e-4, atol=0)
    assert json.loads((tmp_path / "results/demo/losa/train.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_a_training_on_two_gpus_asks_slurm_for_both_on_one_node(tmp_path):
    """The plugin makes `gpu=N` `sbatch --gpus=N` (see the test above) and `nodes=1` `--nodes=1`."""
    tiny_config(tmp_path)
    done = snakemake(tmp_path, "results/demo/annotations.json")
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["methods"]["losa"]["train"] = {"gpus": 2}
    config["methods"]["lofi"]["lofi"]["train"]["gpus"] = 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(tmp_path, "-n", "all", "--config", "device=cuda", profile=ROOT / "profiles" / "slurm")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = {}
    for rule, block in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", done.stdout, re.M | re.S):
        wildcards = re.search(r"wildcards: (.*)", block)
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block).group(1)))
        jobs[(rule, wildcards and wildcards.group(1))] = resources
    assert jobs[("train", "ds=demo, method=losa")]["gpu"] == "2"
    assert jobs[("train", "ds=demo, method=head_only")]["gpu"] == "1"
    assert jobs[("lofi", "ds=demo, method=lofi")]["gpu"] == "4"
    assert all(jobs[key]["nodes"] == "1" for key in jobs if key[0] in ("train", "lofi"))
