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


def test_a_store_finished_before_its_chunk_is_killed_keeps_its_record(tmp_path, source_video, monkeypatch):
    import pytest

    from actloc.stages import cache

    for name in ("one", "two"):
        assert cli.main(["decode", source_video, "--out-dir", tmp_path / "videos", "--names", name, "--fps", "10",
                         "--short-side", "64"]) == 0
    assert cli.main(["backbone", "--name", "t", "--preset", "tiny", "--pixels", "32", "--out",
                     tmp_path / "b.json"]) == 0
    finish, finished = cache.StoreWriter.finish, []

    def killed_at_the_second(self, **attrs):
        if finished:
            raise KeyboardInterrupt  # as a kill -9 of the chunk job, midway
        finished.append(1)
        return finish(self, **attrs)

    monkeypatch.setattr(cache.StoreWriter, "finish", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["cache", tmp_path / "videos" / "one.mp4", tmp_path / "videos" / "two.mp4", "--backbone",
                  tmp_path / "b.json", "--out-dir", tmp_path / "stores", "--batch", "4"])
    record = json.loads(provenance.path_of(tmp_path / "stores" / "one.zarr").read_text())
    assert record["command"][:2] == ["actloc", "cache"] and record["file"] == "one.zarr"
    assert not (tmp_path / "stores" / "two.zarr").exists()
    assert not provenance.path_of(tmp_path / "stores" / "two.zarr").exists()
