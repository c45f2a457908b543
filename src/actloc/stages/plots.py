"""Plots stage: a dataset's results as PNGs to paste into a paper. mAP against the tIoU threshold
for every method, each class's AP per method, and detection timelines against the ground truth
in a few windows of the test videos."""

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .evaluate import ground_truth_table, prediction_table  # noqa: E402
from ..io import InputError, atomic_path, read_annotations, read_json  # noqa: E402

COLOURS = plt.get_cmap("tab10").colors  # methods


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


# Colours of maximal contrast (Kelly's list, grey and white left out), given to the classes a
# figure shows, not to every class of the dataset: at 20 or 200 classes a timeline shows a few,
# and those stay distinct. Each bar is labelled too, so a colour is never the only key.
CLASS_COLOURS = ["#0067A5", "#F38400", "#008856", "#BE0032", "#875692", "#F3C300", "#882D17", "#A1CAF1",
                 "#E68FAC", "#8DB600", "#604E97", "#F99379", "#C2B280", "#654522", "#DCD300", "#B3446C",
                 "#2B3D26", "#E25822", "#F6A600"]


def choose_windows(truth, durations, videos, seconds):
    """Up to `videos` windows of `seconds` (a whole video if shorter), one per video: in each
    video the window starting at an action that covers the most actions, the videos with the
    fullest windows first. Returns [(video, start, end)]."""
    best = []
    for video, actions in truth.groupby("video", sort=True):
        starts, ends = actions["start"].to_numpy(), actions["end"].to_numpy()
        length = min(seconds, durations[video])
        options = [(int(((ends > t) & (starts < t + length)).sum()), -t) for t in
                   np.clip(starts - 0.05 * length, 0, max(durations[video] - length, 0))]
        count, start = max(options)
        best.append((-count, video, -start, -start + length))
    return [(video, start, end) for _, video, start, end in sorted(best)[:videos]]


def packed_rows(segments):
    """A sub-row for each segment ((start, end) in order) so that none overlaps another of its row."""
    ends, rows = [], []
    for start, end in segments:
        row = next((i for i, last in enumerate(ends) if last <= start), len(ends))
        if row == len(ends):
            ends.append(end)
        else:
            ends[row] = end
        rows.append(row)
    return rows


def timelines(methods, detections_jsons, annotations, subset, out, videos=3, min_score=0.3, per_lane=8):
    """Detections against the ground truth in `videos` windows of the test videos where actions
    are densest (a window ~8 typical actions long, 20-120 s, so that a bar is never a pixel): a
    lane of ground truth, then a lane per method with its `per_lane` best detections in the
    window scoring at least `min_score`. Bars are coloured and labelled by class; a detection's
    height and label give its score; ground truth is drawn full height with a black edge."""
    dataset = read_annotations(annotations)
    try:
        truth = ground_truth_table(dataset, subset)
    except InputError as err:
        raise InputError(f"{annotations}: {err}") from None
    tested = set(truth["video"])
    durations = {video: entry["duration"] or truth.loc[truth["video"] == video, "end"].max()
                 for video, entry in dataset["database"].items() if video in tested}
    seconds = float(np.clip(8 * (truth["end"] - truth["start"]).median(), 20, 120))
    chosen = choose_windows(truth, durations, videos, seconds)
    found = {method: prediction_table(read_json(path), path) for method, path in zip(methods, detections_jsons)}
    panels_lanes = []
    for video, start, end in chosen:
        lanes = [truth[(truth["video"] == video) & (truth["end"] > start) & (truth["start"] < end)].assign(score=1.0)]
        for method in methods:
            shown = found[method]
            shown = shown[(shown["video"] == video) & (shown["score"] >= min_score) & (shown["end"] > start)
                          & (shown["start"] < end)]
            lanes.append(shown.sort_values("score", ascending=False, kind="stable").head(per_lane))
        lanes = [lane.sort_values("start", kind="stable") for lane in lanes]
        panels_lanes.append([(lane, packed_rows(zip(lane["start"], lane["end"]))) for lane in lanes])
    shown_classes = sorted({label for lanes in panels_lanes for lane, _ in lanes for label in lane["label"]})
    colour = {label: CLASS_COLOURS[i % len(CLASS_COLOURS)] for i, label in enumerate(shown_classes)}
    names = ["ground truth", *methods]
    heights = [sum(1 + max(rows or [0]) for _, rows in lanes) + 0.6 * len(lanes) for lanes in panels_lanes]
    figure, panels = plt.subplots(len(chosen), 1, figsize=(11, 1 + 0.42 * sum(heights)), squeeze=False,
                                  gridspec_kw={"height_ratios": heights})
    for axes, (video, start, end), lanes in zip(panels[:, 0], chosen, panels_lanes):
        top, ticks = 0.0, []
        for name, (lane, rows) in zip(names, lanes):
            depth = 1 + max(rows or [0])
            ticks.append((top + depth / 2, name))
            for (s, e, label, score), row in zip(lane[["start", "end", "label", "score"]].itertuples(index=False), rows):
                is_truth = name == "ground truth"
                height = 0.8 * (1.0 if is_truth else max(score, 0.1))
                base = top + row + 0.9
                axes.broken_barh([(s, e - s)], (base - height, height), color=colour[label],
                                 edgecolor="black" if is_truth else "none", linewidth=1.2)
                text = label if is_truth else f"{label} {score:.2f}"
                if (min(e, end) - max(s, start)) > 0.009 * len(text) * (end - start):
                    red, green, blue = matplotlib.colors.to_rgb(colour[label])
                    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.55
                    axes.text(max(s, start) + 0.004 * (end - start), base - height / 2, text, fontsize=7,
                              va="center", clip_on=True, color="white" if dark else "black")
            top += depth + 0.6
            axes.axhline(top - 0.3, color="0.85", linewidth=0.8)
        axes.set(xlim=(start, end), ylim=(top - 0.3, 0), yticks=[y for y, _ in ticks],
                 yticklabels=[name for _, name in ticks])
        axes.set_title(f"{video}: {start:.0f}-{end:.0f} s of {durations[video]:.0f} s", fontsize="small", loc="left")
        axes.grid(axis="x", alpha=0.3)
    panels[-1, 0].set_xlabel(f"seconds; each method's {per_lane} best detections scoring >= {min_score}, "
                             "bar height = score; ground truth outlined")
    handles = [Patch(facecolor=colour[label], label=label) for label in shown_classes]
    figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small",
                  title="class", frameon=False)
    figure.tight_layout()
    return save(figure, out)


def video_timeline(video, detections, duration, out, min_score=0.1, classes=8):
    """One video's detections over its whole length (no ground truth): a lane per class, the
    `classes` best-scoring classes, bars scoring at least `min_score`, height = score."""
    found = pd.DataFrame([(d["segment"][0], d["segment"][1], d["label"], d["score"]) for d in detections
                          if d["score"] >= min_score], columns=["start", "end", "label", "score"])
    best = found.groupby("label")["score"].max().sort_values(ascending=False, kind="stable")
    shown = list(best.index[:classes])
    figure, axes = plt.subplots(figsize=(11, 1.2 + 0.45 * max(len(shown), 1)))
    for lane, label in enumerate(shown):
        colour = CLASS_COLOURS[lane % len(CLASS_COLOURS)]
        for start, end, score in found.loc[found["label"] == label, ["start", "end", "score"]].itertuples(index=False):
            axes.broken_barh([(start, end - start)], (lane + 0.4 - 0.8 * score, 0.8 * score), color=colour, alpha=0.9)
    axes.set(xlim=(0, duration), ylim=(max(len(shown), 1) - 0.5, -0.5), yticks=range(len(shown)), yticklabels=shown,
             xlabel=f"seconds; detections scoring >= {min_score}, bar height = score"
                    + (f"; the {classes} best classes of {len(best)}" if len(best) > classes else ""))
    axes.set_title(f"{video}: {len(found)} detections" if shown else f"{video}: no detection scoring >= {min_score}",
                   fontsize="small", loc="left")
    axes.grid(axis="x", alpha=0.3)
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
