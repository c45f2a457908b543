"""Plots stage: a dataset's results as PNGs to paste into a paper. mAP against the tIoU threshold
for every method, each class's AP per method, and detection timelines against the ground truth
for a few test videos."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import pandas as pd  # noqa: E402

from .evaluate import ground_truth_table, prediction_table  # noqa: E402
from ..io import InputError, atomic_path, read_annotations, read_json  # noqa: E402

COLOURS = plt.get_cmap("tab20").colors


def save(figure, out):
    """Write the PNG and return the (closed) figure, whose artists say what was drawn."""
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return figure


def map_vs_tiou(table, out):
    """One line per method: mAP (%) at each tIoU threshold of the report table."""
    columns = [c for c in table.columns if c.startswith("mAP@")]
    thresholds = [float(c.removeprefix("mAP@")) for c in columns]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for _, row in table.iterrows():
        axes.plot(thresholds, row[columns].astype(float), marker="o", label=f"{row['method']} (avg {row['avg']:.1f})")
    axes.set(xlabel="tIoU threshold", ylabel="mAP (%)", xticks=thresholds, ylim=(0, 100))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save(figure, out)


def per_class_ap(methods, per_class_csvs, out):
    """Each class's AP averaged over the thresholds (%), a bar per method."""
    averages = {}
    for method, path in zip(methods, per_class_csvs):
        try:
            table = pd.read_csv(path)
            averages[method] = 100 * table.set_index("class")["average"]
        except (OSError, KeyError, pd.errors.ParserError) as err:
            raise InputError(f"{path}: not a per_class.csv written by actloc evaluate ({err})") from None
    frame = pd.DataFrame(averages).sort_index(ascending=False)
    figure, axes = plt.subplots(figsize=(6, 1 + 0.22 * len(frame) * max(1, len(methods) / 2)))
    frame.plot.barh(ax=axes, width=0.8, color=COLOURS[: len(methods)])
    axes.set(xlabel="AP (%), averaged over tIoU thresholds", ylabel="", xlim=(0, 100))
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(figure, out)


def timelines(methods, detections_jsons, annotations, subset, out, videos=3, min_score=0.3):
    """For the `videos` test videos with the most actions: the ground truth and, below it, each
    method's detections scoring at least `min_score` (more opaque, higher score), coloured by class."""
    dataset = read_annotations(annotations)
    try:
        truth = ground_truth_table(dataset, subset)
    except InputError as err:
        raise InputError(f"{annotations}: {err}") from None
    counts = truth.groupby("video").size().sort_index().sort_values(ascending=False, kind="stable")
    chosen = list(counts.index[:videos])
    classes = sorted(truth["label"].unique())
    colour = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(classes)}
    found = {method: prediction_table(read_json(path), path) for method, path in zip(methods, detections_jsons)}
    rows = ["ground truth", *methods]
    figure, panels = plt.subplots(len(chosen), 1, figsize=(9, 0.5 + 0.4 * len(rows) * len(chosen)), squeeze=False)
    for axes, video in zip(panels[:, 0], chosen):
        lanes = [truth[truth["video"] == video].assign(score=1.0)]
        lanes += [found[m][(found[m]["video"] == video) & (found[m]["score"] >= min_score)] for m in methods]
        for lane, segments in enumerate(lanes):
            for start, end, label, score in segments[["start", "end", "label", "score"]].itertuples(index=False):
                axes.broken_barh([(start, end - start)], (lane - 0.4, 0.8), color=colour.get(label, "grey"),
                                 alpha=max(0.15, score))
        axes.set(title=video, xlim=(0, dataset["database"][video]["duration"]), ylim=(len(rows) - 0.5, -0.5),
                 yticks=range(len(rows)), yticklabels=rows)
        axes.title.set_fontsize("small")
    panels[-1, 0].set_xlabel(f"seconds (detections scoring >= {min_score})")
    handles = [Patch(color=colour[label], label=label) for label in classes]
    figure.legend(handles=handles, loc="upper center", ncol=min(len(classes), 6), fontsize="small",
                  bbox_to_anchor=(0.5, 1.0 + 0.25 / len(chosen)))
    figure.tight_layout()
    return save(figure, out)


def run(report_csv, methods, per_class_csvs, detections_jsons, annotations, subset, out_map, out_per_class,
        out_timelines):
    """The `actloc plots` command."""
    if not len(methods) == len(per_class_csvs) == len(detections_jsons):
        raise InputError("plots: give one per_class.csv and one detections.json per method")
    try:
        table = pd.read_csv(report_csv)
        table = table.set_index("method").loc[methods].reset_index()
    except (OSError, KeyError, pd.errors.ParserError) as err:
        raise InputError(f"{report_csv}: not a map.csv of actloc report for {', '.join(methods)} ({err})") from None
    map_vs_tiou(table, out_map)
    per_class_ap(methods, per_class_csvs, out_per_class)
    timelines(methods, detections_jsons, annotations, subset, out_timelines)
