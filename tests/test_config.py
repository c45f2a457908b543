import copy
import dataclasses
import re
import shlex

import pytest
import yaml
from snakemake.utils import validate

from actloc import config as cfg
from actloc.datasets.demo import plan
from actloc.settings import HeadConfig, LofiConfig, LosaConfig, PartialConfig, TrainConfig
from conftest import ROOT

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def shipped():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


def test_the_shipped_config_passes_every_check(shipped):
    cfg.check(shipped)
    assert cfg.lofi_methods(shipped) == ["lofi"] and cfg.imported_features(shipped) == []


@pytest.mark.parametrize("change, message", [
    (lambda c: c["methods"]["losa"].update(losa={"reduction": 4, "heads": 7}),
     "methods.losa LoSA settings on dataset 'demo' (backbone 'tiny-random', 192 channels): losa: adapter width 48 "
     "(channels 192 / reduction 4) is not a multiple of heads 7"),
    (lambda c: c["datasets"]["demo"]["snippets"].update(stride=20), "dataset 'demo': snippets: stride must be within 1..16"),
    (lambda c: c["datasets"]["demo"]["snippets"].update(frames=15), "snippet frames must be a multiple of the backbone's tubelet (2 frames), got 15"),
    (lambda c: c["methods"]["losa"].update(type="lossa"), "method 'losa' has type 'lossa', which is no method"),
    (lambda c: c["methods"]["losa"].update(losa={"heads": 0}), "methods.losa.losa"),
    (lambda c: c["methods"]["lofi"]["lofi"].update(fidelity="X"), "methods.lofi.lofi: fidelity must be one of"),
    (lambda c: c["methods"]["lofi"]["lofi"].update(train={"epoch": 1}), "methods.lofi.lofi.train: "),
    (lambda c: c["datasets"]["demo"].update(train={"epoch": 1}), "dataset 'demo': train: "),
    (lambda c: c["datasets"]["demo"].update(head={"levels": 2}), "dataset 'demo': head: head: 2 levels need"),
    (lambda c: c["datasets"]["demo"].update(type="kinetics"), "dataset 'demo' has type 'kinetics'"),
    (lambda c: c.update(targets=["nope"]), "targets names 'nope'"),
    (lambda c: c["methods"].update(cache={"type": "head_only"}), "method name 'cache' is reserved"),
    (lambda c: c["backbones"].update(lofi={"preset": "tiny"}), "'lofi' names both a LoFi method"),
    (lambda c: c["backbones"]["tiny-random"].pop("tokens"),
     "dataset 'demo' trains method 'partial' (type partial), which reads every tapped layer, their temporal tokens "
     "and the block tokens, but its backbone 'tiny-random' caches no block tokens: set tokens: {} in "
     "backbones.tiny-random"),
    (lambda c: c["backbones"]["tiny-random"].update(temporal=False),
     "dataset 'demo' trains method 'losa' (type losa), which reads every tapped layer and their temporal tokens, "
     "but its backbone 'tiny-random' caches no temporal tokens: set temporal: true in backbones.tiny-random"),
    # The shipped THUMOS-14 entry switched to published features, as its comment says to.
    (lambda c: c["datasets"]["thumos"].update(backbone="i3d", features={"i3d": {"path": "i3d"}}),
     "dataset 'thumos' trains method 'losa' (type losa), which reads every tapped layer and their temporal tokens, "
     "but its backbone 'i3d' is imported features, with no temporal tokens: imported features are one layer"),
    (lambda c: c["datasets"]["demo-full"].update(backbone="i3d", features={"i3d": {"path": "i3d"}},
                                                 methods=["lofi"]),
     "dataset 'demo-full' trains method 'lofi' (type lofi), which reads the decoded videos (it tunes the "
     "backbone), but its backbone 'i3d' is imported features, with no videos"),
    (lambda c: c["datasets"]["thumos"].pop("videos"),
     "dataset 'thumos' reads videos (its backbone 'vitg' is no imported features) but has no videos"),
    (lambda c: c["datasets"]["thumos"].update(select={"testing": "no/such/list.txt"}),
     "dataset 'thumos': select.testing: no/such/list.txt: file not found"),
    (lambda c: c["datasets"]["thumos"].update(backbone="i3d", methods=["head_only"],
                                              features={"i3d": {"path": "i3d", "frames": 16, "stride": 20}}),
     "dataset 'thumos': features.i3d: stride must be within 1..16"),
    (lambda c: c["methods"]["partial"]["partial"].update(kernel=2), "methods.partial.partial: partial: "
                                                                    "adapter_reduction must be at least 1 and kernel odd"),
    (lambda c: c["methods"]["partial"]["partial"].update(losa={"heads": 7}),
     "methods.partial LoSA settings on dataset 'demo'"),
    (lambda c: c["backbones"]["tiny-random"].update(pixels=20),
     "backbones.tiny-random: pixels 20 is not a multiple of preset 'tiny''s patch size, 16"),
    (lambda c: c["backbones"]["tiny-random"].update(family="internvideo2", pixels=16),
     "backbones.tiny-random: pixels 16 is not a multiple of preset 'tiny''s patch size, 14"),
])
def test_each_cross_check_is_one_error_naming_the_entry(shipped, change, message):
    config = copy.deepcopy(shipped)
    change(config)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.check(config)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def described_defaults(properties):
    """{setting: the default a schema description states in its trailing "(...)"}."""
    found = {}
    for key, prop in properties.items():
        match = re.search(r"\(([^()]*)\)$", str(prop.get("description", "")).strip())
        if match and "..." not in match.group(1):  # "([0,4] ... [64,10000])" abridges a default
            value = yaml.safe_load(match.group(1))
            found[key] = float(value) if isinstance(value, str) and re.fullmatch(r"[\d.]+e-?\d+", value) else value
    return found


@pytest.mark.parametrize("path, settings", [
    (("$defs", "head", "properties"), HeadConfig), (("$defs", "train", "properties"), TrainConfig),
    (("$defs", "losa", "properties"), LosaConfig),
    (("$defs", "method", "properties", "lofi", "properties"), LofiConfig),
    (("$defs", "method", "properties", "partial", "properties"), PartialConfig),
])
def test_the_schema_states_the_codes_defaults(path, settings):
    node = yaml.safe_load(SCHEMA.read_text())
    for key in path:
        node = node[key]
    fields = {f.name: f.default for f in dataclasses.fields(settings)}
    # Every setting the schema takes exists in code, and every default it states is the code's
    # (but train.gpus, how many processes run a training: config.training keeps it from the code).
    assert set(node) - {"train", "gpus"} <= set(fields)
    stated = {key: value for key, value in described_defaults(node).items() if key != "gpus"}
    assert stated, "the schema states no default here"
    for key, value in stated.items():
        assert value == fields[key], key


def test_the_demo_defaults_of_schema_and_code_agree():
    node = yaml.safe_load(SCHEMA.read_text())["$defs"]["dataset"]["properties"]["demo"]["properties"]
    defaults = {name: p.default for name, p in __import__("inspect").signature(plan).parameters.items()}
    assert {key: prop["default"] for key, prop in node.items()} == defaults


def test_the_protocol_line_names_thresholds_ambiguous_resampling_and_classifier(shipped):
    thumos = {**shipped["datasets"]["thumos"], "ambiguous": "count"}
    assert cfg.evaluation_protocol(thumos) == ("Protocol: ActivityNet's detection AP at tIoU 0.3:0.1:0.7; Ambiguous "
                                               "segments unused (as ActionFormer reports).")
    assert "left out (THUMOS-14 toolkit)" in cfg.evaluation_protocol(thumos | {"ambiguous": "ignore"})
    anet = shipped["datasets"]["anet"] | {"classifier": {"path": "c.json", "top_k": 2, "combine": "product"}}
    assert cfg.evaluation_protocol(anet) == (
        "Protocol: ActivityNet's detection AP at tIoU 0.5:0.05:0.95; features resampled to 192 steps a video; "
        "class-agnostic proposals labelled by c.json (top 2, product).")
    assert cfg.method_settings(shipped | {"datasets": {"anet": anet}}, "anet", "head_only")["train"]["actionness"]
    assert shlex.split(cfg.classifier_options(anet)) == ["--classifier", "c.json", "--top-k", "2", "--combine",
                                                         "product"]


def test_command_options_from_config_entries(shipped):
    demo = shipped["datasets"]["demo"]
    assert shlex.split(cfg.demo_options(demo, ("seed", "min_seconds"))) == ["--seed", "0", "--min-seconds", "20"]
    assert shlex.split(cfg.annotation_options(shipped["datasets"]["thumos"])) == [
        "--source", "resources/thumos14", "--out-of-range", "clip", "--subsets", "testing", "validation",
        "--videos", "data/thumos14/videos", "--missing", "error"]
    partial = shipped["datasets"]["thumos"] | {"missing": "skip", "select": {"testing": ["a", "b"]},
                                               "backbone": "i3d", "features": {"i3d": {"path": "f.h5", "fps": 25}}}
    assert shlex.split(cfg.annotation_options(partial))[7:] == ["--features", "f.h5", "--missing", "skip",
                                                                "--select", "testing=a,b"]
    assert shlex.split(cfg.annotation_options(partial | {"select": {"testing": "t.txt"}}))[-1] == "testing=@t.txt"
    assert shlex.split(cfg.import_options(partial, "i3d")) == ["--snippet-frames", "16", "--stride", "4",
                                                               "--missing", "skip", "--fps", "25"]
    assert "--video-prefix" in cfg.annotation_options(shipped["datasets"]["anet"])
    assert shlex.split(cfg.backbone_options(shipped["backbones"]["tiny-random"])) == [
        "--family", "videomae", "--preset", "tiny", "--seed", "0", "--precision", "fp32", "--pixels", "16",
        "--layers", "1", "2", "3", "4", "--temporal", "--tokens"]
    tokens = {**shipped["backbones"]["tiny-random"], "tokens": {"block": 3}}
    assert shlex.split(cfg.backbone_options(tokens))[-3:] == ["--tokens", "--token-block", "3"]


def test_method_settings_merge_dataset_and_method(shipped):
    losa = cfg.method_settings(shipped, "demo", "losa")
    assert losa["method"] == "losa" and losa["losa"]["heads"] == 8
    assert losa["train"] == shipped["datasets"]["demo"]["train"] and losa["head"]["width"] == 128
    # LoFi's stage B is a head_only head on the tuned cache; its stage A gets the snippet protocol.
    assert cfg.method_settings(shipped, "demo-full", "lofi")["method"] == "head_only"
    stage_a = cfg.lofi_settings(shipped, "demo-full", "lofi")
    assert stage_a["lofi"]["snippet_frames"] == 16 and stage_a["lofi"]["stride"] == 4
    assert stage_a["train"]["epochs"] == 20


def test_gpus_is_how_many_processes_train_and_no_training_setting(shipped):
    config = copy.deepcopy(shipped)
    config["datasets"]["demo"]["train"]["gpus"] = 2
    config["methods"]["partial"] = {"type": "partial", "train": {"gpus": 4, "batch": 8}}
    config["methods"]["lofi"]["lofi"] = {**config["methods"]["lofi"].get("lofi", {}), "train": {"gpus": 8}}
    assert cfg.training(config, "demo", "losa") == ({**shipped["datasets"]["demo"]["train"]}, 2)
    assert cfg.training(config, "demo", "partial")[1] == 4 and cfg.training(config, "demo", "lofi")[1] == 2
    assert cfg.training(config, "demo", "lofi", stage_a=True)[1] == 8
    assert cfg.training(shipped, "demo", "losa")[1] == 1
    for method in ("losa", "partial", "lofi"):
        assert "gpus" not in cfg.method_settings(config, "demo", method)["train"]
    assert "gpus" not in cfg.lofi_settings(config, "demo", "lofi")["train"]
    assert cfg.method_settings(config, "demo", "partial")["train"]["batch"] == 8


def test_the_modules_the_snakefile_imports_do_not_import_torch():
    # Snakemake parses the Snakefile in every cluster job: torch would add seconds to each.
    import subprocess
    import sys

    code = "import sys, actloc.config, actloc.chunks, actloc.io; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_stores_a_method_reads_are_expected_as_config_says(shipped):
    assert cfg.cache_settings(shipped, "demo", "losa") == {
        "backbone": "tiny-random", "layers": [1, 2, 3, 4], "pixels": 16, "temporal": True, "snippet_frames": 16,
        "stride": 4, "fps": 10, "identity": "random:0", "block_tokens": {"block": 2, "grid": 1}}
    lofi = cfg.cache_settings(shipped, "demo-full", "lofi")
    assert lofi["backbone"] == "lofi" and "identity" not in lofi  # its tuned backbone, hashed once tuned
    vitg = cfg.cache_settings(shipped, "thumos", "losa")
    assert vitg["layers"] == [10, 20, 30, 40] and vitg["fps"] == 30 and "identity" not in vitg
    features = shipped["datasets"]["thumos"] | {"backbone": "i3d", "features": {"i3d": {"path": "f", "stride": 8}}}
    assert cfg.cache_settings(shipped | {"datasets": {"thumos": features}}, "thumos", "head_only") == {
        "backbone": "i3d", "snippet_frames": 16, "stride": 8}


@pytest.mark.parametrize("entry, message", [
    ({"preset": "gaint"}, "backbones.vitg: unknown preset 'gaint' of backbone family videomae; one of tiny, small"),
    ({"family": "internvideo9"}, "backbones.vitg: unknown backbone family 'internvideo9': no module internvideo9"),
])
def test_a_backbone_of_no_family_or_preset_is_a_config_error_naming_it(shipped, entry, message):
    config = copy.deepcopy(shipped)
    config["backbones"]["vitg"].update(entry)
    with pytest.raises(cfg.ConfigError, match=re.escape(message)):
        cfg.check(config)


def uncommented(text, key):
    """config.yaml's text with the commented-out entry `key` (`  # key:` and the `  #   ` lines
    under it) made live."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if line == f"  # {key}:":
            inside, line = True, f"  {key}:"
        elif inside and line.startswith("  #   "):
            line = "  " + line[len("  # "):]
        else:
            inside = False
        out.append(line)
    return "\n".join(out)


def test_the_commented_internvideo2_backbone_and_dataset_pass_every_check():
    text = uncommented(uncommented((ROOT / "config.yaml").read_text(), "iv2-1b"), "thumos-iv2")
    config = yaml.safe_load(text)
    validate(config, str(SCHEMA))
    cfg.check(config)
    backbone, dataset = config["backbones"]["iv2-1b"], config["datasets"]["thumos-iv2"]
    assert backbone["family"] == "internvideo2" and backbone["preset"] == "1B" and backbone["batch"] == 2
    assert dataset["backbone"] == "iv2-1b" and dataset["type"] == "thumos14" and dataset["snippets"]["frames"] == 16
