import json

import pandas as pd
import pytest

from actloc.io import InputError
from actloc.stages import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(tmp_path):
    """Two methods' outputs on three test videos (v2 has the most actions, then v1)."""
    segments = {"v1": [[1, 3, "run"], [5, 6, "jump"]], "v2": [[0, 2, "run"], [3, 4, "run"], [6, 8, "jump"]],
                "v3": [[2, 4, "jump"]]}
    database = {video: {"subset": "testing", "duration": 10.0,
                        "annotations": [{"segment": [s, e], "label": label} for s, e, label in items]}
                for video, items in segments.items()}
    database["t"] = {"subset": "training", "duration": 10.0, "annotations": [{"segment": [0, 9], "label": "run"}]}
    (tmp_path / "annotations.json").write_text(json.dumps({"classes": ["jump", "run"], "database": database}))
    detections = {"a": {"v2": [{"label": "run", "score": 0.9, "segment": [0, 2]},
                               {"label": "jump", "score": 0.1, "segment": [6, 8]}]},  # below min_score
                  "b": {"v1": [{"label": "run", "score": 0.5, "segment": [1, 3]}]}}
    for method, found in detections.items():
        (tmp_path / f"{method}.json").write_text(json.dumps({"results": found}))
        pd.DataFrame({"class": ["jump", "run"], "0.30": [0.5, 1.0],
                      "average": [0.25, 0.5] if method == "a" else [0.75, 1.0]}).to_csv(
            tmp_path / f"{method}_per_class.csv", index=False)
    pd.DataFrame({"method": ["a", "b"], "mAP@0.30": [80.0, 40.0], "mAP@0.70": [60.0, 20.0], "avg": [70.0, 30.0],
                  "train_minutes": [1.0, 2.0]}).to_csv(tmp_path / "map.csv", index=False)
    return tmp_path


def test_map_vs_tiou_draws_a_line_of_each_methods_map(results):
    table = pd.read_csv(results / "map.csv")
    figure = plots.map_vs_tiou(table, results / "map.png")
    lines = figure.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[0.3, 0.7]] * 2
    assert [list(line.get_ydata()) for line in lines] == [[80.0, 60.0], [40.0, 20.0]]
    assert (results / "map.png").read_bytes().startswith(PNG)


def test_per_class_ap_draws_each_classs_average_ap_per_method(results):
    figure = plots.per_class_ap(["a", "b"], [results / "a_per_class.csv", results / "b_per_class.csv"],
                                results / "pc.png")
    widths = sorted(round(bar.get_width()) for bar in figure.axes[0].patches)
    assert widths == [25, 50, 75, 100]
    assert (results / "pc.png").read_bytes().startswith(PNG)


def bars(axes):
    """(start, width, bottom, height, colour) of each bar of a timeline panel."""
    boxes = [(collection.get_paths()[0].get_extents(), tuple(collection.get_facecolor()[0]))
             for collection in axes.collections]
    return [(box.x0, box.width, box.y0, box.height, colour) for box, colour in boxes]


def test_timelines_show_the_videos_with_most_actions_and_detections_above_the_score(results):
    figure = plots.timelines(["a", "b"], [results / "a.json", results / "b.json"], results / "annotations.json",
                             "testing", results / "t.png", videos=2)
    panels = [axes for axes in figure.axes if axes.get_title(loc="left")]
    assert [axes.get_title(loc="left") for axes in panels] == ["v2: 0-10 s of 10 s", "v1: 0-10 s of 10 s"]
    # One bar a segment: v2, three true and one of a's two detections; v1, two true and one of b's.
    assert [len(axes.collections) for axes in panels] == [4, 3]
    (start, width, _, height, colour), = [bar for bar in bars(panels[1]) if bar[3] < 0.79]  # b's, at score 0.5
    assert (start, width, height) == pytest.approx((1, 2, 0.8 * 0.5))
    assert (results / "t.png").read_bytes().startswith(PNG)


def test_timelines_of_long_videos_show_a_window_and_distinct_class_colours(tmp_path):
    """A 15-minute video of 5 s actions of 20 classes: a window of 40 s around the densest actions,
    not the whole video; a colour per class shown, and the legend outside the panels."""
    classes = [f"class {k:02d}" for k in range(20)]
    actions = [{"segment": [10.0 + 7 * i, 15.0 + 7 * i], "label": classes[i % 20]} for i in range(120)]
    database = {"long": {"subset": "testing", "duration": 900.0, "annotations": actions}}
    (tmp_path / "a.json").write_text(json.dumps({"classes": classes, "database": database}))
    found = [{"label": a["label"], "score": 0.9, "segment": a["segment"]} for a in actions]
    (tmp_path / "d.json").write_text(json.dumps({"results": {"long": found}}))
    figure = plots.timelines(["m"], [tmp_path / "d.json"], tmp_path / "a.json", "testing", tmp_path / "t.png")
    panel = figure.axes[0]
    low, high = panel.get_xlim()
    assert high - low == 40 and panel.get_title(loc="left") == f"long: {low:.0f}-{high:.0f} s of 900 s"
    shown = bars(panel)
    truth = [bar for bar in shown if bar[3] == pytest.approx(0.8)][:len(shown) // 2]
    assert len({bar[4] for bar in truth}) == len(truth) >= 5  # every class in view its own colour
    legend, = figure.legends
    assert legend.get_window_extent().x0 >= panel.get_window_extent().x1
    assert sorted(text.get_text() for text in legend.get_texts()) == sorted({a["label"] for a in actions
                                                                               if a["segment"][1] > low
                                                                               and a["segment"][0] < high})


def test_bad_inputs_are_clear_errors_naming_the_file(results):
    pd.DataFrame({"class": ["run"], "0.30": [1.0]}).to_csv(results / "bad.csv", index=False)
    with pytest.raises(InputError, match="bad.csv: not a per_class.csv"):
        plots.per_class_ap(["a"], [results / "bad.csv"], results / "pc.png")
    (results / "bad.json").write_text(json.dumps({"results": {"v1": [{"label": "run", "segment": [1, 2]}]}}))
    with pytest.raises(InputError, match="bad.json: video v1 detection 0"):
        plots.timelines(["a"], [results / "bad.json"], results / "annotations.json", "testing", results / "t.png")
    with pytest.raises(InputError, match="annotations.json: subset 'validation' has no ground-truth"):
        plots.timelines(["a"], [results / "a.json"], results / "annotations.json", "validation", results / "t.png")
    with pytest.raises(InputError, match="map.csv: not a map.csv of actloc report for a, c"):
        plots.run(results / "map.csv", ["a", "c"], [results / "a_per_class.csv"] * 2, [results / "a.json"] * 2,
                  results / "annotations.json", "testing", *(results / f"{n}.png" for n in "xyz"))
    assert not any((results / f"{n}.png").exists() for n in ("pc", "t", "x", "y", "z"))
