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
    with pytest.raises(InputError, match="one map.csv and one train.json per method"):
        report.run(["a", "b"], [a[0]], [a[1]], tmp_path / "m.csv", tmp_path / "m.md")
    assert not (tmp_path / "m.csv").exists()
