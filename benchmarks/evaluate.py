"""Evaluator speed at THUMOS-14 test size.

The real THUMOS-14 test ground truth (3,358 instances, 213 videos) against 200 predictions per
video (half near a ground truth with jitter, half random; all 20 classes), best of 3.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, report  # noqa: E402
from actloc.datasets import thumos14  # noqa: E402
from actloc.stages import evaluate  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


def predictions(dataset, per_video=200, seed=0):
    rng = np.random.default_rng(seed)
    results = {}
    for video, item in dataset["database"].items():
        if item["subset"] != "testing":
            continue
        truth = item["annotations"] or [{"segment": [0.0, 5.0], "label": dataset["classes"][0]}]
        detections = []
        for i in range(per_video):
            if i % 2:
                start, end = (x + rng.normal(0, 1) for x in truth[rng.integers(len(truth))]["segment"])
                label = truth[rng.integers(len(truth))]["label"]
            else:
                start = rng.uniform(0, item["duration"])
                end, label = start + rng.uniform(1, 20), dataset["classes"][rng.integers(20)]
            detections.append({"label": label, "score": float(rng.random()), "segment": [start, max(end, start + 0.1)]})
        results[video] = detections
    return {"results": results}


def main():
    dataset = thumos14.load(ROOT / "resources" / "thumos14", out_of_range="keep")
    table = evaluate.prediction_table(predictions(dataset))
    rows = []
    for preset, thresholds in evaluate.THRESHOLDS.items():
        per_class = []
        seconds = best_time(lambda: per_class.append(evaluate.evaluate(dataset, table, "testing", thresholds)))
        rows.append({"preset": preset, "thresholds": len(thresholds), "predictions": len(table),
                     "seconds": f"{seconds:.3f}", "avg mAP": f"{evaluate.summarize(per_class[0])['mAP'].iloc[-1]:.4f}"})
    report("evaluate", "Evaluator at THUMOS-14 test size", rows)


if __name__ == "__main__":
    main()
