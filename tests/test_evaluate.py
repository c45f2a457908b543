import json

import numpy as np
import pandas as pd
import pytest

from actloc.io import InputError
from actloc.stages import evaluate
from actloc.stages.evaluate import THRESHOLDS as PRESETS, prediction_table, summarize

HAND = {"classes": ["Jump", "Run"], "database": {
    "vidA": {"subset": "testing", "annotations": [
        {"segment": [10, 20], "label": "Jump"}, {"segment": [30, 40], "label": "Run"}]},
    "vidB": {"subset": "testing", "annotations": [{"segment": [5, 15], "label": "Jump"}]},
}}
HAND_PREDICTIONS = {"results": {
    "vidA": [{"label": "Jump", "score": 0.9, "segment": [10, 20]},
             {"label": "Jump", "score": 0.8, "segment": [11, 21]},
             {"label": "Run", "score": 0.6, "segment": [30, 36.3]}],
    "vidB": [{"label": "Jump", "score": 0.7, "segment": [5, 13.8]},
             {"label": "Run", "score": 0.5, "segment": [0, 3]}],
}}


def average_map(dataset, results, preset="thumos", subset="testing", **kwargs):
    per_class = evaluate.evaluate(dataset, prediction_table(results), subset, PRESETS[preset], **kwargs)
    return summarize(per_class)["mAP"].iloc[-1]


def reference_map(dataset, results, thresholds, subset="testing"):
    """The algorithm with stable ties (docs/evaluation.md) transcribed literally, one prediction
    and threshold at a time."""
    truth = [(v, a["label"], a["segment"]) for v, item in dataset["database"].items()
             if item["subset"] == subset for a in item["annotations"]]
    preds = [(v, d["label"], d["score"], d["segment"]) for v, ds in results["results"].items() for d in ds]
    aps = []
    for label in sorted({t[1] for t in truth}):
        gts = [t for t in truth if t[1] == label]
        mine = sorted([p for p in preds if p[1] == label], key=lambda p: -p[2])  # sorted() is stable
        per_threshold = []
        for th in thresholds:
            matched, tp = set(), []
            for video, _, _, (ps, pe) in mine:
                ious = []
                for g, (gv, _, (gs, ge)) in enumerate(gts):
                    if gv == video:
                        inter = max(0.0, min(pe, ge) - max(ps, gs))
                        ious.append((inter / ((pe - ps) + (ge - gs) - inter), g))
                hit = False
                for iou, g in sorted(ious, key=lambda x: -x[0]):
                    if iou < th:
                        break
                    if g not in matched:
                        matched.add(g)
                        hit = True
                        break
                tp.append(hit)
            tp = np.array(tp, bool)
            if not len(tp):
                per_threshold.append(0.0)
                continue
            ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
            rec = np.concatenate([[0], ctp / len(gts), [1]])
            prec = np.concatenate([[0], ctp / (ctp + cfp), [0]])
            for i in range(len(prec) - 2, -1, -1):
                prec[i] = max(prec[i], prec[i + 1])
            idx = np.flatnonzero(rec[1:] != rec[:-1]) + 1
            per_threshold.append(float(np.sum((rec[idx] - rec[idx - 1]) * prec[idx])))
        aps.append(per_threshold)
    return float(np.mean(aps))


def random_case(rng, n_videos=20, n_classes=4, n_pred=40):
    classes = [f"c{i}" for i in range(n_classes)]
    database, results = {}, {}
    for v in range(n_videos):
        name = f"v{v}"
        segs = []
        for _ in range(rng.integers(1, 6)):
            s = rng.uniform(0, 90)
            segs.append({"segment": [s, s + rng.uniform(1, 10)], "label": classes[rng.integers(n_classes)]})
        database[name] = {"subset": "testing", "annotations": segs}
        dets = []
        for _ in range(rng.integers(0, n_pred)):
            if rng.random() < 0.6:  # near a ground truth, jittered
                g = segs[rng.integers(len(segs))]
                s, e = (x + rng.normal(0, 1.5) for x in g["segment"])
                label = g["label"] if rng.random() < 0.8 else classes[rng.integers(n_classes)]
            else:
                s = rng.uniform(0, 90)
                e, label = s + rng.uniform(0.5, 10), classes[rng.integers(n_classes)]
            if e > s:
                dets.append({"label": label, "score": float(np.round(rng.random(), 2)), "segment": [s, e]})
        results[name] = dets
    return {"classes": classes, "database": database}, {"results": results}


def test_hand_checkable_case():
    assert average_map(HAND, HAND_PREDICTIONS, "activitynet") == pytest.approx(0.533333, abs=1e-6)
    assert average_map(HAND, HAND_PREDICTIONS, "thumos") == pytest.approx(0.816667, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_stable_ties_match_a_literal_transcription_of_the_algorithm(seed):
    dataset, results = random_case(np.random.default_rng(seed))
    for preset in PRESETS:
        assert average_map(dataset, results, preset, ties="stable") == pytest.approx(
            reference_map(dataset, results, PRESETS[preset]), abs=1e-12)


def perfect(dataset):
    return {"results": {v: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in item["annotations"]]
                        for v, item in dataset["database"].items()}}


def test_perfect_predictions_score_one():
    dataset, _ = random_case(np.random.default_rng(0))
    for preset in PRESETS:
        assert average_map(dataset, perfect(dataset), preset) == pytest.approx(1.0)


def test_jitter_lowers_map_monotonically():
    dataset, _ = random_case(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    noise = {v: rng.normal(size=(len(item["annotations"]), 2)) for v, item in dataset["database"].items()}
    scores = []
    for scale in (0.0, 0.5, 1.0, 2.0, 4.0):
        results = perfect(dataset)
        for v, dets in results["results"].items():
            for d, n in zip(dets, noise[v]):
                s, e = d["segment"][0] + scale * n[0], d["segment"][1] + scale * n[1]
                d["segment"] = [min(s, e - 0.1), e]
        scores.append(average_map(dataset, results))
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_stable_ties_keep_input_order_official_ones_reverse_argsort():
    dataset = {"classes": ["a"], "database": {"v": {"subset": "testing", "annotations": [
        {"segment": [0, 10], "label": "a"}]}}}
    good, bad = {"label": "a", "score": 0.5, "segment": [0, 10]}, {"label": "a", "score": 0.5, "segment": [50, 60]}
    # Stable: the first listed is ranked first, so the true positive comes first here ...
    assert average_map(dataset, {"results": {"v": [good, bad]}}, ties="stable") == pytest.approx(1.0)
    # ... and second here, halving the precision at full recall.
    assert average_map(dataset, {"results": {"v": [bad, good]}}, ties="stable") == pytest.approx(0.5)
    # Official: argsort of two equal scores is [0, 1], reversed: the last listed comes first.
    assert average_map(dataset, {"results": {"v": [good, bad]}}) == pytest.approx(0.5)
    assert average_map(dataset, {"results": {"v": [bad, good]}}) == pytest.approx(1.0)


def official_rule_map(dataset, results, thresholds, subset="testing"):
    """The official evaluator's rule, transcribed here one prediction and threshold at a time:
    classes in order of first appearance in the ground truth; a class's predictions in result-file
    order, ranked by np.argsort of their scores reversed; each walks its video's ground truths by
    np.argsort of the tIoUs reversed, stops (false positive) at the first below the threshold and
    takes the first not yet matched; AP over the points where recall changes; means over a
    (thresholds x classes) array. Returns (per-class AP rows, mAP per threshold, average)."""
    classes, truth = [], []
    for video, item in dataset["database"].items():
        if item["subset"] == subset:
            for a in item["annotations"]:
                classes += [a["label"]] if a["label"] not in classes else []
                truth.append((video, a["label"], *a["segment"]))
    preds = [(v, d["label"], d["score"], *d["segment"]) for v, ds in results["results"].items() for d in ds]
    ap = np.zeros((len(thresholds), len(classes)))
    for c, label in enumerate(classes):
        gts = [t for t in truth if t[1] == label]
        mine = [p for p in preds if p[1] == label]
        mine = [mine[i] for i in np.array([p[2] for p in mine], float).argsort()[::-1]]
        matched = np.full((len(thresholds), len(gts)), False)
        tp = np.zeros((len(thresholds), len(mine)))
        for i, (video, _, _, ps, pe) in enumerate(mine):
            here = [g for g, t in enumerate(gts) if t[0] == video]
            if not here:
                continue
            ious = np.array([max(0.0, min(pe, gts[g][3]) - max(ps, gts[g][2])) for g in here])
            ious = ious / np.array([(gts[g][3] - gts[g][2]) + (pe - ps) - iou for g, iou in zip(here, ious)])
            for k, th in enumerate(thresholds):
                for j in ious.argsort()[::-1]:
                    if ious[j] < th:
                        break
                    if not matched[k, here[j]]:
                        matched[k, here[j]], tp[k, i] = True, 1
                        break
        if not mine:
            continue
        for k in range(len(thresholds)):
            ctp, cfp = np.cumsum(tp[k]), np.cumsum(1 - tp[k])
            rec = np.hstack([[0], ctp / float(len(gts)), [1]])
            prec = np.hstack([[0], ctp / (ctp + cfp), [0]])
            for i in range(len(prec) - 2, -1, -1):
                prec[i] = max(prec[i], prec[i + 1])
            idx = np.where(rec[1:] != rec[:-1])[0] + 1
            ap[k, c] = np.sum((rec[idx] - rec[idx - 1]) * prec[idx])
    return ap.T, ap.mean(axis=1), ap.mean(axis=1).mean()


@pytest.mark.parametrize("seed", range(4))
def test_heavy_ties_equal_the_official_rule_to_the_last_bit(seed):
    rng = np.random.default_rng(seed)
    dataset, results = random_case(rng, n_videos=30, n_classes=5, n_pred=60)
    for dets in results["results"].values():
        for d in dets:  # scores of a quantised detector: few distinct values, many ties
            d["score"] = float(np.round(d["score"], 1))
        # Some predictions exactly on a ground truth twice over: equal tIoUs with several truths.
        dets += [dict(d, score=0.5) for d in dets[:2]]
    differs = False
    for preset, thresholds in PRESETS.items():
        per_class = evaluate.evaluate(dataset, prediction_table(results), "testing", thresholds)
        table = summarize(per_class)
        ap, mAP, average = official_rule_map(dataset, results, thresholds)
        assert per_class.to_numpy().tolist() == ap.tolist()  # exact, not approximate
        assert table["mAP"].tolist() == [*mAP, average]
        stable = summarize(evaluate.evaluate(dataset, prediction_table(results), "testing", thresholds,
                                             ties="stable"))
        differs |= stable["mAP"].tolist() != table["mAP"].tolist()
    assert differs  # the ties matter here: a test that could not tell the orders apart proves nothing


def test_thresholds_are_the_official_linspace_values_and_a_tiou_on_one_is_a_hit():
    assert PRESETS["thumos"].tolist() == np.linspace(0.3, 0.7, 5).tolist()
    assert PRESETS["activitynet"].tolist() == np.linspace(0.5, 0.95, 10).tolist()
    assert PRESETS["thumos"][1] == 0.39999999999999997 != 0.4
    dataset = {"classes": ["a"], "database": {"v": {"subset": "testing", "annotations": [
        {"segment": [0.0, 3.0], "label": "a"}]}}}
    results = {"results": {"v": [{"label": "a", "score": 0.9, "segment": [0.0, 1.2]}]}}
    assert evaluate.tiou(np.array([[0.0, 1.2]]), np.array([[0.0, 3.0]]))[0, 0] == PRESETS["thumos"][1]
    per_class = evaluate.evaluate(dataset, prediction_table(results), "testing", PRESETS["thumos"])
    assert per_class.loc["a"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]  # a hit at 0.3 and at "0.4"


def test_a_ground_truth_is_matched_once():
    dataset = {"classes": ["a"], "database": {"v": {"subset": "testing", "annotations": [
        {"segment": [0, 10], "label": "a"}]}}}
    dup = [{"label": "a", "score": s, "segment": [0, 10]} for s in (0.9, 0.8)]
    per_class = evaluate.evaluate(dataset, prediction_table({"results": {"v": dup}}), "testing", [0.5])
    assert per_class.loc["a"].iloc[0] == pytest.approx(1.0)  # AP is 1: the duplicate ranks below recall 1
    extra = {"results": {"v": [dup[1] | {"score": 0.95, "segment": [20, 30]}] + dup}}
    assert average_map(dataset, extra) == pytest.approx(0.5)


def test_false_positives_on_ambiguous_segments_are_left_out_when_asked():
    dataset = {"classes": ["a"], "database": {"v": {"subset": "testing", "ambiguous": [[40, 50]], "annotations": [
        {"segment": [0, 10], "label": "a"}, {"segment": [20, 30], "label": "a"}]}}}
    # By score: a hit, a false positive inside the Ambiguous segment, a false positive elsewhere, a hit.
    predictions = prediction_table({"results": {"v": [
        {"label": "a", "score": 0.9, "segment": [0, 10]}, {"label": "a", "score": 0.8, "segment": [42, 48]},
        {"label": "a", "score": 0.7, "segment": [60, 70]}, {"label": "a", "score": 0.6, "segment": [20, 30]}]}})
    counted = evaluate.evaluate(dataset, predictions, "testing", [0.5]).loc["a"].iloc[0]
    ignored = evaluate.evaluate(dataset, predictions, "testing", [0.5], ambiguous="ignore").loc["a"].iloc[0]
    # By hand: counted, precisions 1 (recall 1/2) and 2/4 (recall 1): AP 0.5 + 0.5 * 0.5 = 0.75;
    # with the ambiguous one left out, 2/3 at recall 1: 0.5 + 0.5 * 2/3.
    assert counted == pytest.approx(0.75) and ignored == pytest.approx(0.5 + 1 / 3)
    # A hit is never left out, even inside an Ambiguous segment; without any, nothing changes.
    dataset["database"]["v"]["ambiguous"] = [[0, 12]]
    assert evaluate.evaluate(dataset, predictions, "testing", [0.5], ambiguous="ignore").loc["a"].iloc[0] == counted
    with pytest.raises(InputError, match="ambiguous must be one of count, ignore"):
        evaluate.evaluate(dataset, predictions, "testing", [0.5], ambiguous="drop")


def test_empty_predictions_and_classes_without_predictions():
    dataset, _ = random_case(np.random.default_rng(3))
    assert average_map(dataset, {"results": {}}) == 0.0
    one_class = perfect(dataset)
    for v in one_class["results"]:
        one_class["results"][v] = [d for d in one_class["results"][v] if d["label"] == "c0"]
    assert average_map(dataset, one_class) == pytest.approx(1 / 4)


def test_predictions_outside_the_subset_are_false_positives():
    dataset = json.loads(json.dumps(HAND))
    dataset["database"]["vidC"] = {"subset": "training", "annotations": [{"segment": [0, 10], "label": "Run"}]}
    results = json.loads(json.dumps(HAND_PREDICTIONS))
    results["results"]["vidC"] = [{"label": "Jump", "score": 0.99, "segment": [0, 10]}]
    # Jump's AP drops from 1/2 to 1/3 with the top-ranked false positive: (0.8 + 1/3 + ...) / 2.
    assert average_map(dataset, results) == pytest.approx(0.65)
    assert average_map(HAND, HAND_PREDICTIONS) == pytest.approx(0.816667, abs=1e-6)


def test_unknown_labels_error_or_ignored():
    results = json.loads(json.dumps(HAND_PREDICTIONS))
    results["results"]["vidA"].append({"label": "Swim", "score": 0.99, "segment": [0, 5]})
    with pytest.raises(InputError, match="not classes of the dataset: Swim"):
        average_map(HAND, results)
    assert average_map(HAND, results, unknown_labels="ignore") == pytest.approx(0.816667, abs=1e-6)


def test_reversed_segments_are_errors_and_zero_length_ones_false_positives(caplog):
    results = {"results": {"vidA": [{"label": "Jump", "score": 0.9, "segment": [5, 5]},
                                    {"label": "Jump", "score": 0.9, "segment": [20, 10]}]}}
    with pytest.raises(InputError, match=r"det.json: video vidA detection 1: segment \[20.0, 10.0\] is reversed"):
        prediction_table(results, "det.json")
    # A zero-length prediction ranked first scores as any false positive ranked there would.
    empty, elsewhere = (json.loads(json.dumps(HAND_PREDICTIONS)) for _ in range(2))
    empty["results"]["vidA"].append({"label": "Jump", "score": 0.999, "segment": [15, 15]})
    elsewhere["results"]["vidA"].append({"label": "Jump", "score": 0.999, "segment": [900, 901]})
    with caplog.at_level("WARNING"):
        assert average_map(HAND, empty) == average_map(HAND, elsewhere) < average_map(HAND, HAND_PREDICTIONS)
    assert "1 zero-length segment(s), each a false positive" in caplog.text


def test_malformed_predictions():
    with pytest.raises(InputError, match="det.json: expected a JSON object with a 'results'"):
        prediction_table({"vidA": []}, "det.json")
    with pytest.raises(InputError, match="video vidA detection 0: expected label, score and segment"):
        prediction_table({"results": {"vidA": [{"label": "Jump", "segment": [1, 2]}]}}, "det.json")


def test_run_writes_map_and_per_class_tables(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(HAND))
    (tmp_path / "det.json").write_text(json.dumps(HAND_PREDICTIONS))
    table, per_class = evaluate.run(tmp_path / "gt.json", tmp_path / "det.json", "testing", "thumos",
                                    tmp_path / "map.csv", tmp_path / "per_class.csv")
    written = pd.read_csv(tmp_path / "map.csv", dtype={"tiou": str})
    assert list(written["tiou"]) == ["0.30", "0.40", "0.50", "0.60", "0.70", "average"]
    assert written["mAP"].iloc[-1] == pytest.approx(0.816667, abs=1e-6)
    # Full precision: every value reads back as the very float computed (0.81666... has 16 digits).
    assert written["mAP"].tolist() == table["mAP"].tolist()
    assert pd.read_csv(tmp_path / "per_class.csv", index_col="class").to_numpy().tolist() == \
        per_class.to_numpy().tolist()
    classes = pd.read_csv(tmp_path / "per_class.csv", index_col="class")
    assert list(classes.index) == ["Jump", "Run"]
    # Run: its one prediction has tIoU 0.63, a hit up to 0.6 and a miss at 0.7.
    assert list(classes.loc["Run"]) == pytest.approx([1, 1, 1, 1, 0, 0.8])
    assert np.allclose(per_class.to_numpy(), classes.to_numpy())
