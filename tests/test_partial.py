import json

import pandas as pd
import pytest
import torch

from actloc import cli
from actloc.backbones import videomae
from actloc.io import InputError
from actloc.methods.detector import Detector
from actloc.settings import HeadConfig, LosaConfig, PartialConfig
from actloc.stages import backbone, cache, decode
from actloc.store.stores import open_cache
from conftest import graph_leaves, run_ffmpeg

PIXELS = 32  # 2 x 2 patches: grid 2 is the full grid
HEAD = HeadConfig(width=16, levels=2, window=5, heads=2, regression_ranges=((0, 4), (4, 10000)))
LOSA = {"reduction": 4, "heads": 4}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=5", "-c:v", "libx264", folder / "src.mp4")
    decode.normalize(folder / "src.mp4", folder / "clip.mp4", fps=10, short_side=PIXELS)
    return folder / "clip.mp4"


def built(video, folder, grid):
    """(backbone settings, the store's attributes, its full read, float16 as stored) with block 2's
    tokens at `grid`."""
    settings = backbone.describe("tiny-test", "tiny", pixels=PIXELS, layers=[1, 2, 3, 4],
                                 tokens={"block": 2, "grid": grid})
    attrs = cache.build(video, folder / "clip.zarr", settings, batch=4)
    read = open_cache(folder / "clip.zarr").read(temporal=True, tokens=True)
    return settings, attrs, {name: x[None] for name, x in read.items()}


@pytest.fixture(scope="module")
def full_grid(video, tmp_path_factory):
    return built(video, tmp_path_factory.mktemp("full"), grid=2)


def partial_detector(settings, attrs, seed=0, **config):
    torch.manual_seed(seed)
    net = Detector("partial", attrs["channels"], len(attrs["layers"]), 3, HEAD,
                   PartialConfig(losa=LOSA, **config), attrs)
    net.features.load_backbone(settings, attrs)
    return net


def upper_taps(net, read):
    """The detector's inputs from a batch of one whole-video read (float16 as stored)."""
    return net.inputs({**read, "mask": torch.ones(1, read["pooled"].shape[2], dtype=torch.bool)})


def test_the_store_records_and_holds_the_block_tokens(full_grid):
    settings, attrs, read = full_grid
    assert attrs["block_tokens"] == {"block": 2, "grid": 2, "final_norm": "fc_norm", "layer_scale": False}
    assert read["block_tokens"].shape == (1, 1, attrs["snippets"], 8, 4, 192)


@torch.no_grad()
def test_at_the_full_grid_the_recomputed_taps_are_the_cached_ones(full_grid):
    settings, attrs, read = full_grid
    pooled, temporal = upper_taps(partial_detector(settings, attrs), read)
    for row in (2, 3):  # layers 3 and 4, above block 2
        # float16 tokens in, float16 activations cached: equal to float16 precision
        torch.testing.assert_close(pooled[0, row], read["pooled"][0, row].float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(temporal[0, row], read["temporal"][0, row].float(), rtol=2e-2, atol=2e-2)
        assert not torch.equal(pooled[0, row], read["pooled"][0, row].float())  # recomputed, not copied
    assert torch.equal(pooled[0, :2], read["pooled"][0, :2].float())  # the taps at or below block 2 are the cache's


@torch.no_grad()
def test_untrained_adapters_pass_the_frozen_blocks_through_at_any_grid(video, tmp_path):
    settings, attrs, read = built(video, tmp_path, grid=1)
    net = partial_detector(settings, attrs)
    pooled, temporal = upper_taps(net, read)
    vit, _ = videomae.load("tiny")
    tokens = read["block_tokens"][0, 0].float()  # (T, t, 1, C)
    taps = vit.run_blocks(tokens.flatten(1, 2), (8, 1, 1), 2, [3, 4])
    for row, (tap, layer) in zip((2, 3), zip(taps, (3, 4))):
        torch.testing.assert_close(pooled[0, row], vit.pool(tap, layer), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(temporal[0, row], vit.pool(tap, layer, temporal=True), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_untrained_partial_starts_as_losa_on_the_same_cache(full_grid):
    settings, attrs, read = full_grid
    net = partial_detector(settings, attrs)
    torch.manual_seed(0)
    losa = Detector("losa", attrs["channels"], 4, 3, HEAD, LosaConfig(**LOSA))
    batch = {**read, "mask": torch.ones(1, attrs["snippets"], dtype=torch.bool)}
    for ours, theirs in zip(net(batch), losa(batch)):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


def loss_of(net, read):
    batch = {**read, "mask": torch.ones(1, read["pooled"].shape[2], dtype=torch.bool)}
    return net.head.loss(net(batch), [(torch.tensor([[2.0, 9.0]]), torch.tensor([1]))])["loss"]


@pytest.mark.parametrize("tune_blocks", [0, 1])
def test_gradients_reach_exactly_what_trains_above_block_k(full_grid, tune_blocks):
    settings, attrs, read = full_grid
    net = partial_detector(settings, attrs, tune_blocks=tune_blocks, checkpointing=False)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    tuned = {name for name in trainable if name.startswith("features.vit.")}
    expected = {f"features.vit.{n}" for n, _ in net.features.vit.blocks[3].named_parameters(prefix="blocks.3")}
    assert tuned == (expected | {"features.vit.fc_norm.weight", "features.vit.fc_norm.bias"} if tune_blocks else set())
    assert all(not name.startswith("features.vit.blocks.") or name.startswith(("features.vit.blocks.2.",
                                                                               "features.vit.blocks.3."))
               for name, _ in net.named_parameters())  # no weight at or below block 2 exists
    loss = loss_of(net, read)
    assert not any(read[name].requires_grad for name in read)
    assert graph_leaves(loss) == {id(p) for p in net.parameters() if p.requires_grad}
    loss.backward()
    torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2).step()
    net.zero_grad()
    loss_of(net, read).backward()
    for name, p in net.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (name in trainable), name


def test_checkpointed_blocks_give_the_same_gradients(full_grid):
    settings, attrs, read = full_grid
    grads = []
    for checkpointing in (False, True):
        net = partial_detector(settings, attrs, checkpointing=checkpointing)
        net.train()
        loss_of(net, read).backward()
        grads.append(net.features.adapters[1].up.weight.grad)
    torch.testing.assert_close(*grads)


def test_a_budget_too_small_is_refused_before_training(full_grid):
    settings, attrs, _ = full_grid
    from actloc.settings import TrainConfig

    net = partial_detector(settings, attrs, budget_mb=1)
    with pytest.raises(InputError, match=r"partial: a step needs \d+ MB: 2 video\(s\) x 2 snippets .* budget is 1 MB"):
        net.features.snippets_per_step(net, TrainConfig(), torch.device("cpu"))
    roomy = partial_detector(settings, attrs)
    assert roomy.features.snippets_per_step(roomy, TrainConfig(max_length=64), torch.device("cpu")) == 64


def test_a_cache_without_block_tokens_or_another_backbone_is_refused(full_grid):
    settings, attrs, _ = full_grid
    with pytest.raises(InputError, match="holds no block tokens; set tokens in its backbones entry"):
        Detector("partial", 192, 4, 3, HEAD, PartialConfig(losa=LOSA), {**attrs, "block_tokens": None})
    net = Detector("partial", 192, 4, 3, HEAD, PartialConfig(losa=LOSA), attrs)
    with pytest.raises(InputError, match=r"did not build this cache \(random:0\)"):
        net.features.load_backbone({**settings, "identity": "random:7", "seed": 7}, attrs)


def partial_dataset(video, folder):
    """Two training videos and a testing one cached with block 2's tokens at grid 1, indexed."""
    settings = backbone.describe("tiny-test", "tiny", pixels=PIXELS, layers=[2, 4], tokens={"grid": 1})
    assert settings["block_tokens"]["block"] == 2  # half the depth
    (folder / "backbone.json").write_text(json.dumps(settings))
    database = {}
    for name, subset in (("a", "training"), ("b", "training"), ("c", "testing")):
        cache.build(video, folder / "cache" / f"{name}.zarr", settings, batch=4)
        database[name] = {"subset": subset, "duration": 5.0,
                          "annotations": [{"segment": [1.0, 3.0], "label": "x"}]}
    (folder / "gt.json").write_text(json.dumps({"classes": ["x", "y"], "database": database}))
    assert cli.main(["cache-index", "--annotations", folder / "gt.json", "--folder", folder / "cache",
                     "--backbone", folder / "backbone.json", "--out", folder / "index.json"]) == 0


def test_bf16_training_follows_fp32_within_bf16_precision(video, tmp_path):
    """train.precision bf16 runs the steps under autocast (weights, optimiser, EMA in float32):
    the same training's losses stay within bf16's precision of fp32's."""
    from actloc.stages import train

    partial_dataset(video, tmp_path)
    losses = {}
    for precision in ("fp32", "bf16"):
        run = {"method": "partial", "head": {"width": 16, "levels": 2, "regression_ranges": [[0, 4], [4, 1e4]]},
               "partial": {"losa": LOSA}, "train": {"epochs": 3, "warmup_epochs": 0, "batch": 1,
                                                    "precision": precision}}
        out = tmp_path / precision
        summary = train.train(tmp_path / "index.json", tmp_path / "gt.json", "training", run, out / "model.pt",
                              out / "log.csv", out / "train.json", device="cpu", backbone=tmp_path / "backbone.json")
        assert summary["precision"] == precision
        state = torch.load(out / "model.pt", weights_only=True)["state"]
        assert all(value.dtype != torch.bfloat16 for value in state.values())  # kept in float32
        losses[precision] = torch.tensor(pd.read_csv(out / "log.csv")["loss"].to_numpy())
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=3e-2, atol=0)
    assert not torch.equal(losses["bf16"], losses["fp32"])  # it did run in bf16


def test_partial_trains_and_infers_through_the_command_line(video, tmp_path, capfd):
    partial_dataset(video, tmp_path)
    run = {"method": "partial", "head": {"width": 16, "levels": 2, "regression_ranges": [[0, 4], [4, 1e4]]},
           "partial": {"losa": LOSA}, "train": {"epochs": 2, "warmup_epochs": 0}}
    common = ["--index", tmp_path / "index.json", "--annotations", tmp_path / "gt.json", "--device", "cpu"]
    train = ["train", *common, "--subset", "training", "--settings", json.dumps(run), "--out-model",
             tmp_path / "model.pt", "--out-log", tmp_path / "log.csv", "--out-summary", tmp_path / "train.json"]
    assert cli.main([str(a) for a in train]) == 1
    assert "partial tunes the backbone's upper blocks: it needs --backbone" in capfd.readouterr().err
    assert cli.main([str(a) for a in train + ["--backbone", tmp_path / "backbone.json"]]) == 0
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["method"] == "partial" and summary["trainable_parameters"] > 0
    # It trained the blocks' adapters: their up-projections, zero at the start, moved.
    state = torch.load(tmp_path / "model.pt", weights_only=True)["state"]
    ups = [key for key in state if key.endswith("up.weight") and "adapter" in key]
    assert ups and all(state[key].abs().sum() > 0 for key in ups), sorted(state)[:20]
    assert cli.main([str(a) for a in ["infer", *common, "--subset", "testing", "--model", tmp_path / "model.pt",
                                       "--out", tmp_path / "detections.json", "--out-features", tmp_path / "tuned"]]) == 0
    detections = json.loads((tmp_path / "detections.json").read_text())["results"]["c"]
    assert detections and all(0 <= d["segment"][0] < d["segment"][1] <= 5.0 for d in detections)
    # The tuned upper blocks' taps as a cache: the lower tap is the cache's, the upper one recomputed.
    tuned = json.loads((tmp_path / "tuned.json").read_text())["stores"]
    assert list(tuned) == ["c"]
    store, source = open_cache(tuned["c"]["path"]), open_cache(tmp_path / "cache" / "c.zarr")
    assert store.attrs["backbone"] == "tiny-test+partial" and store.attrs["identity"].startswith("random:0+sha256:")
    assert store.attrs["block_tokens"] is None and store.snippets == source.snippets
    ours, theirs = store.read(temporal=True), source.read(temporal=True)
    assert torch.equal(ours["pooled"][0], theirs["pooled"][0]) and not torch.equal(ours["pooled"][1], theirs["pooled"][1])
    # A method without blocks of its own has no such features.
    run["method"] = "losa"
    del run["partial"]
    train[train.index("--settings") + 1] = json.dumps(run | {"losa": LOSA})
    assert cli.main([str(a) for a in train]) == 0
    assert cli.main([str(a) for a in ["infer", *common, "--subset", "testing", "--model", tmp_path / "model.pt",
                                       "--out", tmp_path / "d2.json", "--out-features", tmp_path / "t2"]]) == 1
    assert "method losa computes no features of its own" in capfd.readouterr().err
