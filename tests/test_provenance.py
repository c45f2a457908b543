import hashlib
import json
import subprocess
from importlib.metadata import version

from actloc import cli, provenance
from conftest import ROOT, THUMOS


def annotations_args(folder):
    return ["annotations", "--type", "demo", "--n-train", "2", "--n-test", "1",
            "--out", folder / "a.json", "--classes", folder / "c.txt"]


def test_each_output_gets_a_record_of_command_settings_and_code_and_a_rerun_the_same(tmp_path):
    out, classes = tmp_path / "a.json", tmp_path / "c.txt"
    assert cli.main(annotations_args(tmp_path)) == 0
    records = {path: provenance.path_of(path).read_bytes() for path in (out, classes)}
    record = json.loads(records[out])
    assert record["file"] == "a.json" and record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(records[classes])["file"] == "c.txt"
    assert record["command"][:4] == ["actloc", "annotations", "--type", "demo"]
    assert record["settings"]["n_train"] == 2 and record["settings"]["type"] == "demo"
    assert record["outputs"] == [str(out), str(classes)]
    assert record["code"]["actloc"] == version("actloc") and record["software"]["torch"].startswith("2.13.0")
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert record["code"]["git_commit"] == head.strip()
    assert cli.main(annotations_args(tmp_path)) == 0
    assert {path: provenance.path_of(path).read_bytes() for path in records} == records  # no time, no host


def test_a_failed_command_writes_no_record(tmp_path):
    args = ["annotations", "--type", "thumos14", "--source", THUMOS, "--out", tmp_path / "a.json",
            "--classes", tmp_path / "c.txt"]
    assert cli.main(args) == 1  # segments past a video's end
    assert list(tmp_path.iterdir()) == []


def test_train_settings_are_recorded_as_the_json_they_hold():
    args = cli.parser().parse_args(["train", "--index", "i.json", "--annotations", "a.json", "--subset", "training",
                                    "--settings", '{"method": "losa", "train": {"lr": 0.002}}',
                                    "--out-model", "m.pt", "--out-log", "l.csv", "--out-summary", "s.json"])
    settings = cli.settings_of(args)
    assert settings["settings"] == {"method": "losa", "train": {"lr": 0.002}}
    assert settings["out_model"] == "m.pt" and "func" not in settings


def test_a_slurm_job_names_itself_in_the_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with caplog.at_level("INFO"):
        assert cli.main(annotations_args(tmp_path)) == 0
    assert "actloc annotations: SLURM job 4242 on " in caplog.text
