"""Detection mAP by the official ActivityNet algorithm, in NumPy.

Per class: predictions sorted by score (stable, descending); each one is a true positive at
threshold th for the still-unmatched ground truth of the same video with the highest tIoU,
if that tIoU >= th; a ground truth is matched at most once per threshold. AP is all-point
interpolated. mAP at a threshold is the mean AP over the classes that have ground truth in
the evaluated subset; a class with no prediction has AP 0. Matching only interacts within a
(class, video) pair, so the sequential part runs over one video's predictions at a time,
vectorised over thresholds.
"""

import numpy as np
import pandas as pd

from .io import InputError, read_json, write_text

PRESETS = {
    "thumos": (0.3, 0.4, 0.5, 0.6, 0.7),
    "activitynet": (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95),
}


def tiou(predicted, truth):
    """Temporal IoU of every predicted segment (P x 2) with every true one (G x 2): P x G."""
    start = np.maximum(predicted[:, None, 0], truth[None, :, 0])
    end = np.minimum(predicted[:, None, 1], truth[None, :, 1])
    inter = np.clip(end - start, 0, None)
    union = (predicted[:, 1] - predicted[:, 0])[:, None] + (truth[:, 1] - truth[:, 0])[None, :] - inter
    return inter / union


def greedy_match(ious, thresholds):
    """True positives (K x P) of predictions in score order against one video's truths.

    `ious` is P x G for one class in one video, rows in descending score order.
    """
    k = len(thresholds)
    taken = np.zeros((k, ious.shape[1]), bool)
    hits = np.zeros((k, ious.shape[0]), bool)
    rows = np.arange(k)
    for p in np.flatnonzero(ious.max(axis=1) >= thresholds.min()):
        free = np.where(taken, -1.0, ious[p])
        best = free.argmax(axis=1)
        hit = free[rows, best] >= thresholds
        hits[hit, p] = True
        taken[rows[hit], best[hit]] = True
        if taken.all():
            break
    return hits


def average_precision(hits, n_truth):
    """All-point interpolated AP for each row of `hits` (K x P, predictions in score order)."""
    if hits.shape[1] == 0:
        return np.zeros(hits.shape[0])
    tp = np.cumsum(hits, axis=1)
    fp = np.cumsum(~hits, axis=1)
    recall = tp / n_truth
    precision = tp / (tp + fp)
    # Precision made monotone from the right, summed over the recall steps.
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)
    steps = np.diff(recall, axis=1, prepend=0.0)
    return (steps * envelope).sum(axis=1)


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
                rows.append((video, str(det["label"]), float(det["score"]), start, end))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{source}: video {video} detection {i}: expected label, score and "
                                 f"segment [start, end], got {det!r}") from None
            if not end > start:
                raise InputError(f"{source}: video {video} detection {i}: segment [{start}, {end}] has end <= start")
    return pd.DataFrame(rows, columns=["video", "label", "score", "start", "end"])


def evaluate(dataset, predictions, subset, thresholds, unknown_labels="error"):
    """AP per class and threshold, as a DataFrame indexed by the classes that have ground truth.

    `dataset` is loaded annotations.json, `predictions` a prediction_table. A prediction for a
    video outside the subset counts as a false positive. Labels outside the dataset's classes
    are an error, or dropped with `unknown_labels="ignore"`.
    """
    thresholds = np.asarray(thresholds, float)
    truth = ground_truth_table(dataset, subset)
    unknown = sorted(set(predictions["label"]) - set(dataset["classes"]))
    if unknown and unknown_labels == "error":
        raise InputError(f"predictions use labels that are not classes of the dataset: {', '.join(unknown)}")
    truth_by_class = {label: group for label, group in truth.groupby("label", sort=False)}
    predictions = predictions[predictions["label"].isin(truth_by_class)]
    predicted_by_class = dict(tuple(predictions.groupby("label", sort=False)))
    ap = {}
    for label in sorted(truth_by_class):
        truths = truth_by_class[label]
        predicted = predicted_by_class.get(label, predictions.iloc[:0])
        predicted = predicted.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
        segments = predicted[["start", "end"]].to_numpy()
        truth_segments = {v: g[["start", "end"]].to_numpy() for v, g in truths.groupby("video", sort=False)}
        hits = np.zeros((len(thresholds), len(predicted)), bool)
        for video, rows in predicted.groupby("video", sort=False).indices.items():
            if video in truth_segments:
                hits[:, rows] = greedy_match(tiou(segments[rows], truth_segments[video]), thresholds)
        ap[label] = average_precision(hits, len(truths))
    columns = [f"{t:.2f}" for t in thresholds]
    return pd.DataFrame.from_dict(ap, orient="index", columns=columns).rename_axis("class")


def summarize(per_class):
    """mAP per threshold plus the average over thresholds, as a two-column table."""
    mean = per_class.mean(axis=0)
    return pd.DataFrame({"tiou": list(mean.index) + ["average"], "mAP": list(mean) + [mean.mean()]})


def run(annotations, predictions_path, subset, preset, out_map, out_per_class, unknown_labels="error"):
    """The `actloc evaluate` command: write map.csv and per_class.csv, return the summary."""
    if preset not in PRESETS:
        raise InputError(f"unknown tIoU preset {preset!r}: expected one of {', '.join(PRESETS)}")
    per_class = evaluate(read_json(annotations), prediction_table(read_json(predictions_path), predictions_path),
                         subset, PRESETS[preset], unknown_labels)
    table = summarize(per_class)
    per_class = per_class.assign(average=per_class.mean(axis=1))
    write_text(out_per_class, per_class.to_csv(float_format="%.6f"))
    write_text(out_map, table.to_csv(index=False, float_format="%.6f"))
    return table, per_class
