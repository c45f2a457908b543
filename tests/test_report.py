import pandas as pd
import pytest

from actloc.io import InputError, write_json, write_text
from actloc.stages import report


def method_outputs(folder, name, maps, parameters):
    write_text(folder / f"{name}.csv", pd.DataFrame({"tiou": ["0.30", "0.70", "average"], "mAP": maps})
               .to_csv(index=False))
    write_json(folder / f"{name}.json", {"trainable_parameters": parameters, "peak_memory_mb": 512.0,
                                         "train_seconds": 90.0})
    return folder / f"{name}.csv", folder / f"{name}.json"


def test_one_row_per_method_in_percent_as_csv_and_markdown(tmp_path):
    a = method_outputs(tmp_path, "a", [0.8, 0.4, 0.6], 1000)
    b = method_outputs(tmp_path, "b", [0.9, 0.5, 0.7], 2500)
    table = report.run(["head_only", "losa"], [a[0], b[0]], [a[1], b[1]], tmp_path / "map.csv", tmp_path / "map.md")
    assert list(table.columns) == ["method", "mAP@0.30", "mAP@0.70", "avg", "trainable_params", "peak_memory_mb",
                                   "train_minutes"]
    saved = pd.read_csv(tmp_path / "map.csv")
    assert saved["avg"].tolist() == [60.0, 70.0] and saved["train_minutes"].tolist() == [1.5, 1.5]
    md = (tmp_path / "map.md").read_text().splitlines()
    assert md[0].startswith("| method | mAP@0.30") and md[3] == "| losa | 90.00 | 50.00 | 70.00 | 2,500 | 512.00 | 1.50 |"
    report.run(["head_only", "losa"], [a[0], b[0]], [a[1], b[1]], tmp_path / "map.csv", tmp_path / "map.md",
               protocol="Protocol: x.")
    assert (tmp_path / "map.md").read_text().endswith("1.50 |\n\nProtocol: x.\n")


def test_a_lofi_row_adds_its_stage_a_and_other_rows_leave_it_blank(tmp_path):
    a = method_outputs(tmp_path, "a", [0.8, 0.4, 0.6], 1000)
    b = method_outputs(tmp_path, "b", [0.9, 0.5, 0.7], 2500)
    write_json(tmp_path / "stage_a.json", {"trainable_parameters": 3_000_000, "peak_memory_mb": 800.0,
                                           "train_seconds": 300.0})
    table = report.run(["head_only", "lofi"], [a[0], b[0]], [a[1], b[1]], tmp_path / "map.csv", tmp_path / "map.md",
                       {"lofi": tmp_path / "stage_a.json"})
    assert list(table.columns[-3:]) == ["stage_a_params", "stage_a_peak_memory_mb", "stage_a_minutes"]
    saved = pd.read_csv(tmp_path / "map.csv")
    assert saved["stage_a_minutes"].isna().tolist() == [True, False] and saved["stage_a_minutes"].iloc[1] == 5.0
    md = (tmp_path / "map.md").read_text().splitlines()
    assert md[2].endswith("| 1.50 |  |  |  |")
    assert md[3].endswith("| 1.50 | 3,000,000 | 800.00 | 5.00 |")
    with pytest.raises(InputError, match="--stage-a names losa, not among --methods"):
        report.run(["head_only"], [a[0]], [a[1]], tmp_path / "m.csv", tmp_path / "m.md", {"losa": a[1]})


def test_a_bad_map_or_mismatched_lists_are_clear_errors(tmp_path):
    a = method_outputs(tmp_path, "a", [0.8, 0.4, 0.6], 1000)
    write_text(tmp_path / "bad.csv", "x,y\n1,2\n")
    with pytest.raises(InputError, match="bad.csv: not a map.csv"):
        report.run(["a"], [tmp_path / "bad.csv"], [a[1]], tmp_path / "m.csv", tmp_path / "m.md")
    with pytest.raises(InputError, match="one map.csv, one train.json \\(and one per_class.csv\\) per method"):
        report.run(["a", "b"], [a[0]], [a[1]], tmp_path / "m.csv", tmp_path / "m.md")
    assert not (tmp_path / "m.csv").exists()


def test_a_summary_without_its_keys_is_one_error_naming_it(tmp_path):
    a = method_outputs(tmp_path, "a", [0.8, 0.4, 0.6], 1000)
    write_json(a[1], {"peak_memory_mb": 1.0})
    with pytest.raises(InputError, match="a.json: not a train.json written by actloc train "
                                         "\\(no 'trainable_parameters', 'train_seconds' in it\\)"):
        report.run(["a"], [a[0]], [a[1]], tmp_path / "m.csv", tmp_path / "m.md")


def coverage_map(folder, name, maps, videos, of):
    path, summary = method_outputs(folder, name, maps, 10)
    table = pd.read_csv(path).assign(subset="testing", videos=videos, benchmark_videos=of)
    write_text(path, table.to_csv(index=False))
    return path, summary


def test_results_on_part_of_the_subset_say_on_how_many_videos(tmp_path):
    a = coverage_map(tmp_path, "a", [0.8, 0.4, 0.6], 10, 213)
    table = report.run(["a"], [a[0]], [a[1]], tmp_path / "m.csv", tmp_path / "m.md", protocol="Protocol: x.")
    assert table[["subset", "videos", "benchmark_videos"]].values.tolist() == [["testing", 10, 213]]
    md = (tmp_path / "m.md").read_text()
    assert md.endswith("\n\nProtocol: x. Scored on 10 of the 213 testing videos: the others are left out (the "
                       "dataset's select or missing: skip).\n")
    assert "benchmark_videos" not in md  # the line says it, not a column
    full = coverage_map(tmp_path, "b", [0.8, 0.4, 0.6], 213, 213)
    report.run(["b"], [full[0]], [full[1]], tmp_path / "m.csv", tmp_path / "m.md", protocol="Protocol: x.")
    assert (tmp_path / "m.md").read_text().endswith("|\n\nProtocol: x.\n")  # a whole benchmark: nothing more


def test_per_class_table_and_the_report_page_section(tmp_path):
    a = method_outputs(tmp_path, "head_only", [0.8, 0.4, 0.6], 1000)
    b = method_outputs(tmp_path, "losa", [0.9, 0.5, 0.7], 2500)
    for name, averages in (("head_only", [0.5, 0.25]), ("losa", [1.0, 0.75])):
        pd.DataFrame({"class": ["Run_fast", "Jump"], "0.30": averages, "average": averages}).to_csv(
            tmp_path / f"{name}_pc.csv", index=False)
    report.run(["head_only", "losa"], [a[0], b[0]], [a[1], b[1]], tmp_path / "m.csv", tmp_path / "m.md",
               protocol="Protocol: x.", per_class_csvs=[tmp_path / "head_only_pc.csv", tmp_path / "losa_pc.csv"],
               out_per_class=tmp_path / "per_class_ap.csv", out_rst=tmp_path / "report.rst", name="thumos")
    per_class = pd.read_csv(tmp_path / "per_class_ap.csv")
    assert per_class.values.tolist() == [["Jump", 25.0, 75.0], ["Run_fast", 50.0, 100.0]]
    from docutils.core import publish_parts

    html = publish_parts((tmp_path / "report.rst").read_text(), writer="html")["html_body"]
    assert "<h1" in html and "thumos" in html and "Protocol: x." in html
    assert html.count("<table") == 2 and "mailto" not in html  # mAP@0.30 is no e-mail address
    assert "<td>mAP at tIoU 0.30</td>\n<td>80.00</td>\n<td>90.00</td>" in html
    assert "<td>Run_fast</td>\n<td>50.00</td>\n<td>100.00</td>" in html
