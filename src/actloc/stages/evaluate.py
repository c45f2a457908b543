"""Detection mAP by the official ActivityNet algorithm, in NumPy, equal to the official
evaluator (`Evaluation/eval_detection.py` of the ActivityNet repository) to the last bit.

Per class: predictions in descending score order; each one is a true positive at threshold th
for the still-unmatched ground truth of the same video with the highest tIoU, if that tIoU >= th;
a ground truth is matched at most once per threshold. AP is all-point interpolated. mAP at a
threshold is the mean AP over the classes that have ground truth in the evaluated subset; a
class with no prediction has AP 0. Matching only interacts within a (class, video) pair, so the
sequential part runs over one video's predictions at a time, vectorised over thresholds.

Equal to the last bit, ties included, means doing what the official code does where the
algorithm leaves a choice (`ties="official"`, the default):
- equal scores: the order of NumPy's `argsort` of the class's scores, reversed, the predictions
  taken in the order of the result file (videos, then each video's list); equal tIoUs with
  several ground truths likewise;
- thresholds: `np.linspace` values (0.39999999999999997, not 0.4);
- sums: AP summed over the points where recall changes, recall padded with 0 and 1; mAP the
  mean over classes in the order they first appear in the ground truth.
`argsort`'s order of equal values is NumPy's choice of algorithm, which can differ between
NumPy versions and processors (SIMD sorts); `ties="stable"` ranks equal scores (and tIoUs) in
the order they are listed instead, the same everywhere.
"""

import logging

import numpy as np
import pandas as pd

from ..io import InputError, read_annotations, read_json, write_text

log = logging.getLogger(__name__)

# The official thresholds, bit for bit: THUMOS-14's 0.3:0.1:0.7 and ActivityNet's 0.5:0.05:0.95.
THRESHOLDS = {"thumos": np.linspace(0.3, 0.7, 5), "activitynet": np.linspace(0.5, 0.95, 10)}
TIES = ("official", "stable")


def descending(values, ties="official"):
    """Indices of `values` from the largest down; equal values as `ties` says (module docstring)."""
    if ties == "official":
        return np.argsort(values)[::-1]
    return np.argsort(-values, kind="stable")


def tiou(predicted, truth):
    """Temporal IoU of every predicted segment (P x 2) with every true one (G x 2): P x G."""
    start = np.maximum(predicted[:, None, 0], truth[None, :, 0])
    end = np.minimum(predicted[:, None, 1], truth[None, :, 1])
    inter = np.clip(end - start, 0, None)
    union = (predicted[:, 1] - predicted[:, 0])[:, None] + (truth[:, 1] - truth[:, 0])[None, :] - inter
    return inter / union


def greedy_match(ious, thresholds, ties="official"):
    """True positives (K x P) of predictions in score order against one video's truths.

    `ious` is P x G for one class in one video, rows in descending score order. Each prediction
    walks the truths by descending tIoU (`ties` orders equal ones) and takes the first free one.
    """
    k = len(thresholds)
    taken = np.zeros((k, ious.shape[1]), bool)
    hits = np.zeros((k, ious.shape[0]), bool)
    rows = np.arange(k)
    for p in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):
        walk = descending(ious[p], ties)
        free = np.where(taken[:, walk], -1.0, ious[p, walk])
        first = free.argmax(axis=1)  # the first of the highest free ones in the walk
        best = walk[first]
        hit = free[rows, first] >= thresholds
        hits[hit, p] = True
        taken[rows[hit], best[hit]] = True
        if taken.all():
            break
    return hits


def average_precision(hits, n_truth, ignored=None):
    """All-point interpolated AP for each row of `hits` (K x P, predictions in score order):
    precision made monotone from the right, summed over the points where recall changes.
    Recall is padded with 0 and 1 (precision with 0) and each row summed on its own, as the
    official code does: the same terms in the same order give the same rounding. `ignored`
    (K x P) leaves predictions out of a row's ranking altogether."""
    if ignored is not None:
        return np.array([average_precision(hits[row:row + 1, ~ignored[row]], n_truth)[0]
                         for row in range(hits.shape[0])])
    ap = np.zeros(hits.shape[0])
    if hits.shape[1] == 0:
        return ap
    tp = np.cumsum(hits, axis=1)
    fp = np.cumsum(~hits, axis=1)
    recall = np.pad(tp / n_truth, ((0, 0), (1, 1)), constant_values=(0, 1))
    precision = np.pad(tp / (tp + fp), ((0, 0), (1, 1)))
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)
    for row in range(len(ap)):
        changed = np.flatnonzero(recall[row, 1:] != recall[row, :-1]) + 1
        ap[row] = np.sum((recall[row, changed] - recall[row, changed - 1]) * envelope[row, changed])
    return ap


def ground_truth_table(dataset, subset):
    """One row per ground-truth segment of the subset: video, label, start, end."""
    rows = [
        (video, ann["label"], *ann["segment"])
        for video, item in dataset["database"].items() if item["subset"] == subset
        for ann in item["annotations"]
    ]
    if not rows:
        raise InputError(f"subset {subset!r} has no ground-truth segment to evaluate against")
    return pd.DataFrame(rows, columns=["video", "label", "start", "end"])


def prediction_table(results, source="predictions"):
    """Flatten ActivityNet result JSON (`{"results": {video: [...]}}`) and sanitise it."""
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise InputError(f"{source}: expected a JSON object with a 'results' object (ActivityNet result form)")
    rows = []
    for video, detections in results["results"].items():
        for i, det in enumerate(detections):
            try:
                start, end = (float(x) for x in det["segment"])
                score = float(det["score"])
                rows.append((video, str(det["label"]), score, start, end))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{source}: video {video} detection {i}: expected label, score and "
                                 f"segment [start, end], got {det!r}") from None
            if not np.isfinite([score, start, end]).all():
                raise InputError(f"{source}: video {video} detection {i}: score {score} and segment "
                                 f"[{start}, {end}] must be finite numbers")
            if end < start:
                raise InputError(f"{source}: video {video} detection {i}: segment [{start}, {end}] is reversed "
                                 "(end < start)")
    table = pd.DataFrame(rows, columns=["video", "label", "score", "start", "end"])
    empty = int((table["end"] == table["start"]).sum())
    if empty:  # overlapping nothing, each is a false positive, as in the official evaluator
        log.warning("%s: %d zero-length segment(s), each a false positive", source, empty)
    return table


AMBIGUOUS = ("count", "ignore")


def evaluate(dataset, predictions, subset, thresholds, unknown_labels="error", ties="official",
             source="predictions", ambiguous="count"):
    """AP per class and threshold, as a DataFrame indexed by the classes that have ground truth,
    in the order they first appear in it (the official evaluator's, which its mean follows).

    `dataset` is loaded annotations.json, `predictions` a prediction_table (`source` names it in
    errors). A prediction for a video outside the subset counts as a false positive. Labels
    outside the dataset's classes are an error, or dropped with `unknown_labels="ignore"`.
    `ambiguous="ignore"`: a false positive that overlaps one of its video's Ambiguous segments
    (THUMOS-14) is left out, as the THUMOS-14 toolkit does; "count" (ActivityNet's algorithm,
    what ActionFormer reports) counts it.
    """
    if ambiguous not in AMBIGUOUS:
        raise InputError(f"ambiguous must be one of {', '.join(AMBIGUOUS)}, got {ambiguous!r}")
    if ties not in TIES:
        raise InputError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    thresholds = np.asarray(thresholds, float)
    truth = ground_truth_table(dataset, subset)
    unknown = sorted(set(predictions["label"]) - set(dataset["classes"]))
    if unknown and unknown_labels == "error":
        raise InputError(f"{source}: labels that are not classes of the dataset: {', '.join(unknown)} "
                         f"(--unknown-labels ignore drops them)")
    truth_by_class = {label: group for label, group in truth.groupby("label", sort=False)}
    predictions = predictions[predictions["label"].isin(truth_by_class)]
    predicted_by_class = dict(tuple(predictions.groupby("label", sort=False)))
    ap = {}
    for label, truths in truth_by_class.items():
        predicted = predicted_by_class.get(label, predictions.iloc[:0])
        predicted = predicted.iloc[descending(predicted["score"].to_numpy(), ties)].reset_index(drop=True)
        segments = predicted[["start", "end"]].to_numpy()
        truth_segments = {v: g[["start", "end"]].to_numpy() for v, g in truths.groupby("video", sort=False)}
        hits = np.zeros((len(thresholds), len(predicted)), bool)
        near_ambiguous = np.zeros(len(predicted), bool)
        for video, rows in predicted.groupby("video", sort=False).indices.items():
            if video in truth_segments:
                hits[:, rows] = greedy_match(tiou(segments[rows], truth_segments[video]), thresholds, ties)
            marked = dataset["database"].get(video, {}).get("ambiguous") or []
            if ambiguous == "ignore" and marked:
                near_ambiguous[rows] = (tiou(segments[rows], np.asarray(marked, float)) > 0).any(axis=1)
        ignored = ~hits & near_ambiguous if ambiguous == "ignore" else None
        ap[label] = average_precision(hits, len(truths), ignored)
    columns = [f"{t:.2f}" for t in thresholds]
    return pd.DataFrame.from_dict(ap, orient="index", columns=columns).rename_axis("class")


def summarize(per_class):
    """mAP per threshold plus the average over thresholds, as a two-column table. The means are
    taken as the official code takes them: over each threshold's row of a (thresholds x classes)
    array, classes in the order of `per_class`, then over thresholds."""
    mean = np.ascontiguousarray(per_class.to_numpy().T).mean(axis=1)
    return pd.DataFrame({"tiou": list(per_class.columns) + ["average"], "mAP": [*mean, mean.mean()]})


def coverage(dataset, subset):
    """{videos: the subset's videos evaluated, benchmark_videos: those and the ones the dataset
    left out (annotations.json's left_out: not selected, or no source present)}."""
    videos = sum(entry["subset"] == subset for entry in dataset["database"].values())
    return {"videos": videos, "benchmark_videos": videos + len(dataset.get("left_out", {}).get(subset, []))}


def run(annotations, predictions_path, subset, preset, out_map, out_per_class, unknown_labels="error",
        ties="official", ambiguous="count"):
    """The `actloc evaluate` command: write map.csv (mAP per threshold and their average, with the
    subset and how many of its videos were evaluated, of how many) and per_class.csv at full
    precision; return the summary and the per-class table (classes sorted, with their average
    over thresholds)."""
    if preset not in THRESHOLDS:
        raise InputError(f"unknown tIoU preset {preset!r}: expected one of {', '.join(THRESHOLDS)}")
    dataset = read_annotations(annotations)
    per_class = evaluate(dataset, prediction_table(read_json(predictions_path), predictions_path),
                         subset, THRESHOLDS[preset], unknown_labels, ties, predictions_path, ambiguous)
    table = summarize(per_class).assign(subset=subset, **coverage(dataset, subset))
    per_class = per_class.assign(average=per_class.mean(axis=1)).sort_index()
    write_text(out_per_class, per_class.to_csv())
    write_text(out_map, table.to_csv(index=False))
    return table, per_class
