import json

import pytest

from actloc import cli, methods
from actloc.methods import detector
from actloc.stages import evaluate

# A method of its own, as a user would add one: one module holding METHOD (docs/extending.md).
TOY = '''
from torch import nn

from actloc.methods import Method


class MeanOfLayers(nn.Module):
    """The head's input: every tapped layer's pooled features, averaged."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, pooled, temporal, mask):
        return self.norm(pooled.mean(1))


METHOD = Method("toy_mean", layers="all", temporal=False,
                features=lambda channels, n_layers, settings: MeanOfLayers(channels))
'''
HEAD = {"width": 32, "levels": 3, "window": 5, "heads": 2, "regression_ranges": [[0, 4], [4, 8], [8, 10000]]}


@pytest.fixture
def toy_method(tmp_path, monkeypatch):
    (tmp_path / "toy_mean.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "toy_mean"


def test_the_builtin_methods_are_found_and_parts_are_not():
    assert [methods.get(name).name for name in ("head_only", "losa", "lofi")] == ["head_only", "losa", "lofi"]
    assert methods.get("losa").layers == "all" and methods.get("losa").temporal
    assert methods.get("lofi").train is not None and methods.get("head_only").train is None
    for name in ("head", "nms", "detector", "bogus", "no.such.module", "../x", 3):
        assert not methods.exists(name)
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        methods.get("bogus")


def test_a_module_without_a_well_named_method_is_refused(tmp_path, monkeypatch):
    (tmp_path / "not_a_method.py").write_text("X = 1\n")
    (tmp_path / "misnamed.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="holds no METHOD"):
        methods.get("not_a_method")
    with pytest.raises(ValueError, match="METHOD is named 'toy_mean', not after its module"):
        methods.get("misnamed")


def test_a_registered_toy_method_trains_and_infers_through_the_cli(tmp_path, synthetic_dataset, toy_method):
    index, annotations = synthetic_dataset
    settings = {"method": toy_method, "head": HEAD,
                "train": {"epochs": 40, "warmup_epochs": 2, "lr": 3e-3, "batch": 2}}
    out = tmp_path / toy_method
    assert cli.main(["train", "--index", index, "--annotations", annotations, "--subset", "training",
                     "--settings", json.dumps(settings), "--out-model", out / "model.pt",
                     "--out-log", out / "train_log.csv", "--out-summary", out / "train.json", "--device", "cpu"]) == 0
    net, saved = detector.load(out / "model.pt")
    assert saved["settings"]["method"] == toy_method and type(net.features).__name__ == "MeanOfLayers"
    assert net.reads == {"layers": None, "temporal": False, "tokens": False} and net.pooled_mean.shape[0] == 2  # every tapped layer, standardised
    assert cli.main(["infer", "--model", out / "model.pt", "--index", index, "--annotations", annotations,
                     "--subset", "training", "--out", out / "detections.json", "--device", "cpu"]) == 0
    table, _ = evaluate.run(annotations, out / "detections.json", "training", "thumos", out / "map.csv",
                            out / "per_class.csv")
    assert table["mAP"].iloc[-1] > 0.9


def test_an_unknown_method_is_one_line_from_the_cli(tmp_path, synthetic_dataset, capsys):
    index, annotations = synthetic_dataset
    assert cli.main(["train", "--index", index, "--annotations", annotations, "--subset", "training",
                     "--settings", '{"method": "mylab.nothing"}', "--out-model", tmp_path / "m.pt",
                     "--out-log", tmp_path / "l.csv", "--out-summary", tmp_path / "s.json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["actloc train: error: train --settings: unknown method 'mylab.nothing': no module mylab.nothing"]
    assert not (tmp_path / "m.pt").exists()
