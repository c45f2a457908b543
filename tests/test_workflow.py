"""Real Snakemake runs of the workflow on tiny generated data, in a temporary folder."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from actloc import cache
from conftest import ROOT, THUMOS, env_with_actloc, run_ffmpeg

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TINY = {"seed": 1, "n_train": 2, "n_test": 1, "min_seconds": 6, "max_seconds": 8}


# A head small enough to train in seconds on 6-8 s videos (15-20 snippets).
TINY_HEAD = {"width": 16, "levels": 2, "window": 3, "heads": 2, "regression_ranges": [[0, 8], [8, 10000]]}


def tiny_config(tmp_path, **datasets):
    config = {"targets": ["demo"],
              "backbones": {"tiny": {"preset": "tiny", "pixels": 32, "layers": [2, 4], "batch": 4}},
              "methods": {"head_only": {"type": "head_only"}, "losa": {"type": "losa"},
                          "lofi": {"type": "lofi", "lofi": {"budget_mb": 2000, "train": {"epochs": 1}}}},
              "datasets": {"demo": {"type": "demo", "demo": TINY, "decode": {"fps": 10, "short_side": 64},
                                    "backbone": "tiny", "head": TINY_HEAD, "methods": ["head_only", "losa", "lofi"],
                                    "train": {"epochs": 2, "warmup_epochs": 1}}, **datasets}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def snakemake(tmp_path, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile", "-d", tmp_path, "--cores", "2",
           "--workflow-profile", "none", *args]
    return subprocess.run(list(map(str, cmd)), cwd=tmp_path, env=env_with_actloc(), capture_output=True, text=True)


def test_schema_fills_defaults_and_accepts_the_shipped_config():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    assert config["datasets"]["thumos"]["out_of_range"] == "clip"
    minimal = {"targets": ["x"], "backbones": {"b": {"preset": "tiny"}},
               "datasets": {"x": {"type": "demo", "decode": {"fps": 5, "short_side": 32}, "backbone": "b"}}}
    validate(minimal, str(SCHEMA))
    assert minimal["device"] == "auto"
    assert minimal["backbones"]["b"] == {"preset": "tiny", "seed": 0, "temporal": True, "precision": "fp32",
                                         "batch": 8}
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
    (lambda d: d["demo"].update(type="kinetics"), "'kinetics' is not one of"),
    (lambda d: d["demo"].update(backbone="vit-x"), "dataset 'demo' uses backbone 'vit-x', which is neither"),
    (lambda d: d["demo"].update(snippets={"frames": 15}), "15 is not a multiple of 2"),
    (lambda d: d["demo"].update(methods=["lofy"]), "dataset 'demo' lists method 'lofy', which is not under methods"),
    (lambda d: d.update(pub={**d["demo"], "features": {"pub": {"path": "p.h5"}}, "backbone": "pub"}),
     "dataset 'pub' lists LoFi method 'lofi', which tunes the backbone on videos, but its backbone 'pub' is"),
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
def test_demo_dag_runs_to_the_table_and_reruns_nothing(tmp_path):
    tiny_config(tmp_path)
    done = snakemake(tmp_path, "all", "results/demo/videos.json")
    assert done.returncode == 0, done.stderr[-3000:]
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
        assert (results / "benchmarks" / "decode" / f"{video}.tsv").is_file()
        store = cache.open_cache(results / "cache" / "tiny" / f"{video}.zarr",
                                 expect={"stride": 4, "fps": 10.0, "pixels": 32, "layers": [2, 4]})
        assert stores[video]["snippets"] == store.snippets == cache.snippet_count(info["frames"], 16, 4)
        assert "clip/s" in (results / "logs" / "cache" / "tiny" / f"{video}.log").read_text()
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
        cache.open_cache(results / "cache" / "lofi" / f"{video}.zarr",
                         expect={"backbone": "lofi", "identity": tuned["identity"], "pixels": 32})
    for method in ("head_only", "losa", "lofi"):
        assert len(pd.read_csv(results / method / "train_log.csv")) == 3
        detections = json.loads((results / method / "detections.json").read_text())["results"]
        assert list(detections) == ["demo_test_000"]  # the test subset only
        own = pd.read_csv(results / method / "map.csv")
        assert own["mAP"].iloc[-1] * 100 == pytest.approx(table["avg"].iloc[table["method"].tolist().index(method)])
        assert not (results / method / "checkpoint.pt").exists()
    again = snakemake(tmp_path, "all", "results/demo/videos.json")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
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
    done = snakemake(tmp_path, "results/anet/videos.json", "results/thumos/annotations.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "results/anet/videos.json").read_text()).keys() == {"abc"}
    assert json.loads((tmp_path / "results/anet/videos.json").read_text())["abc"]["frames"] == 10
    thumos = json.loads((tmp_path / "results/thumos/annotations.json").read_text())
    assert len(thumos["database"]) == 413
    missing = snakemake(tmp_path, "results/thumos/videos/video_test_0000004.mp4")
    assert missing.returncode != 0
    assert "thumos_videos/video_test_0000004.mp4" in missing.stderr + missing.stdout
    assert "reads its videos from thumos_videos/, which does not exist" in missing.stderr + missing.stdout


@pytest.mark.slow
def test_lint_and_format_are_clean():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
                          cwd=ROOT, capture_output=True, text=True, env=env_with_actloc())
    assert lint.returncode == 0 and "good condition" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    fmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


@pytest.mark.slow
def test_imported_features_become_the_cache_without_videos(tmp_path):
    anet = {"database": {v: {"subset": "validation", "duration": 8.0, "fps": 4.0,
                             "annotations": [{"segment": [0.5, 1.5], "label": "Run"}]} for v in ("a", "b")}}
    (tmp_path / "anet.json").write_text(json.dumps(anet))
    with h5py.File(tmp_path / "feats.h5", "w") as f:
        f["v_a"], f["v_b"] = np.ones((8, 6)), np.zeros((8, 6))
    tiny_config(tmp_path, anet={"type": "activitynet", "annotations": "anet.json", "videos": "none",
                                "train_subset": "validation", "test_subset": "validation",
                                "decode": {"fps": 4, "short_side": 32}, "backbone": "pub",
                                "features": {"pub": {"path": "feats.h5"}}, "methods": ["head_only"],
                                "head": TINY_HEAD, "train": {"epochs": 1, "warmup_epochs": 1}})
    done = snakemake(tmp_path, "results/anet/map.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rule decode" not in done.stdout + done.stderr and "rule backbone" not in done.stdout + done.stderr
    assert pd.read_csv(tmp_path / "results/anet/map.csv")["method"].tolist() == ["head_only"]
    stores = json.loads((tmp_path / "results/anet/cache/pub.json").read_text())["stores"]
    assert {v: s["snippets"] for v, s in stores.items()} == {"a": 8, "b": 8}
    store = cache.open_cache(tmp_path / stores["a"]["path"],
                             expect={"layers": [-1], "backbone": "pub", "identity": "imported:feats.h5"})
    assert store.read()["pooled"].sum() == 48
