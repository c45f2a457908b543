import json

import numpy as np
import pytest

from actloc import classifier
from actloc.io import InputError
from actloc.stages import evaluate, infer, train


def write(path, content):
    path.write_text(json.dumps(content))
    return path


def test_both_published_layouts_read_with_or_without_the_v_prefix(tmp_path):
    cuhk = write(tmp_path / "cuhk.json", {"results": {"abc": [0.1, 0.7, 0.2]}, "class": ["Surf", "Run", "Other"]})
    intern = write(tmp_path / "intern.json", {"results": {"v_abc": [0.1, 0.7, 0.2]}, "classes": ["Surf", "Run", "Other"]})
    for path in (cuhk, intern):
        scores = classifier.load(path, ["abc"], ["Run", "Surf"])  # in the annotations' order
        assert scores["abc"].tolist() == [0.7, 0.1]
    assert classifier.load(cuhk, ["v_abc"], ["Run"])["v_abc"].tolist() == [0.7]


def test_each_proposal_gets_the_top_k_classes_scored_as_checked_by_hand():
    detections = [{"score": 0.8, "segment": [1.0, 4.0]}, {"score": 0.5, "segment": [6.0, 9.0]}]
    fused = classifier.fuse(detections, np.array([0.1, 0.6, 0.3]), ["a", "b", "c"], top_k=2, combine="product")
    # b (0.6) and c (0.3), each with both proposals: 0.48, 0.30, 0.24, 0.15
    assert fused == [{"label": "b", "score": 0.48, "segment": [1.0, 4.0]},
                     {"label": "b", "score": 0.3, "segment": [6.0, 9.0]},
                     {"label": "c", "score": 0.24, "segment": [1.0, 4.0]},
                     {"label": "c", "score": 0.15, "segment": [6.0, 9.0]}]
    rooted = classifier.fuse(detections, np.array([0.1, 0.6, 0.3]), ["a", "b", "c"], top_k=1, combine="sqrt")
    assert [d["score"] for d in rooted] == [pytest.approx(0.69282, abs=1e-5), pytest.approx(0.547723, abs=1e-6)]


@pytest.mark.parametrize("content, says", [
    ({"results": {"abc": [0.1, 0.9]}, "class": ["Surf", "Dive"]}, r"no scores for 1 class\(es\) of the annotations, e.g. Run"),
    ({"results": {"xyz": [0.1, 0.9]}, "class": ["Surf", "Run"]}, r"no scores for 1 of 1 videos, e.g. abc"),
    ({"results": {"abc": [0.1]}, "class": ["Surf", "Run"]}, r"video abc: 1 scores for 2 classes"),
    ({"results": {"abc": [0.1, 0.9]}}, r"not a video-level classifier file"),
    ([1, 2], r"not a video-level classifier file \(no 'results'"),
])
def test_a_mismatched_file_is_one_error_naming_it(tmp_path, content, says):
    path = write(tmp_path / "scores.json", content)
    with pytest.raises(InputError, match=f"scores.json: .*{says}"):
        classifier.load(path, ["abc"], ["Surf", "Run"])


def test_an_actionness_head_and_a_classifier_file_reach_the_classes(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    truth = json.loads(annotations.read_text())
    # A perfect classifier: each video's own classes score 1, the others 0.
    scores = {video: [float(any(a["label"] == c for a in entry["annotations"])) for c in truth["classes"]]
              for video, entry in truth["database"].items()}
    path = write(tmp_path / "scores.json", {"results": scores, "class": truth["classes"]})
    settings = {"method": "head_only", "head": {"width": 32, "levels": 3, "window": 5, "heads": 2,
                                                 "regression_ranges": [[0, 4], [4, 8], [8, 10000]]},
                "train": {"epochs": 40, "warmup_epochs": 2, "lr": 3e-3, "batch": 2, "actionness": True}}
    train.train(index, annotations, "training", settings, tmp_path / "model.pt", tmp_path / "log.csv",
                tmp_path / "train.json", device="cpu")
    with pytest.raises(InputError, match="trained for actionness: give the video-level classifier"):
        infer.run(tmp_path / "model.pt", index, annotations, "training", tmp_path / "d.json", "cpu")
    infer.run(tmp_path / "model.pt", index, annotations, "training", tmp_path / "d.json", "cpu",
              classifier={"path": path, "top_k": 2, "combine": "sqrt"})
    detections = json.loads((tmp_path / "d.json").read_text())["results"]
    for video, found in detections.items():
        own = {a["label"] for a in truth["database"][video]["annotations"]}
        assert found and {d["label"] for d in found if d["score"] > 0} <= own  # the classifier's classes
    # The head found the actions themselves: class-agnostic, they are nearly all right.
    agnostic = {"classes": ["action"], "database": {v: {**e, "annotations": [
        {**a, "label": "action"} for a in e["annotations"]]} for v, e in truth["database"].items()}}
    write(tmp_path / "agnostic.json", agnostic)
    proposals = {v: list({tuple(d["segment"]): {**d, "label": "action"} for d in reversed(ds)}.values())
                 for v, ds in detections.items()}  # each proposal once, at its best fused score
    write(tmp_path / "d1.json", {"results": proposals})
    table, _ = evaluate.run(tmp_path / "agnostic.json", tmp_path / "d1.json", "training", "thumos",
                            tmp_path / "m.csv", tmp_path / "p.csv")
    assert table["mAP"].iloc[-1] > 0.9
