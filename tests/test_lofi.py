import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from actloc.backbones import videomae
from actloc.engine.device import fixed_bytes, saved_bytes
from actloc.io import InputError, write_json
from actloc.methods import lofi
from actloc.stages import lofi as lofi_stage
from actloc.methods.detector import Detector
from actloc.methods import full_settings
from actloc.settings import MODES, HeadConfig, LofiConfig, TrainConfig, head_config
from actloc.stages import backbone
from actloc.stages import cache
from actloc.stages import decode
from actloc.store.stores import open_cache
from conftest import free_port

PIXELS = 64  # four patches a side: S, ST and T each cut the tokens of a step
SIDES = {"S": 32, "T": 64, "ST": 48}
HEAD = {"width": 16, "levels": 2, "window": 3, "heads": 2, "regression_ranges": [[0, 8], [8, 10000]]}


@pytest.fixture(scope="module")
def decoded(demo_videos, tmp_path_factory):
    """The tiny demo decoded at 10 fps, its videos.json and annotations, and a random tiny backbone's JSON."""
    source, _ = demo_videos
    folder = tmp_path_factory.mktemp("decoded")
    for video in sorted(source.glob("*.mp4")):
        decode.normalize(video, folder / "videos" / video.name, fps=10, short_side=64)
    index = folder / "videos.json"
    decode.write_index(source / "annotations.json", folder / "videos", index)
    base = folder / "tiny.json"
    write_json(base, backbone.describe("tiny", "tiny", pixels=PIXELS, layers=[2, 4]))
    return index, source / "annotations.json", base


def settings(**lofi_settings):
    return {"method": "lofi", "head": HEAD, "lofi": {"budget_mb": 2000, **lofi_settings},
            "train": {"epochs": 2, "warmup_epochs": 1, "lr": 1e-3}}


@pytest.fixture(scope="module")
def stage_a(decoded, tmp_path_factory):
    """Stage A run once (cyclic, 3 epochs), with the frame side of every clip batch it read."""
    index, annotations, base = decoded
    out = tmp_path_factory.mktemp("stage_a")
    sides, read = [], lofi_stage.clips_of

    def recording(reader, video, snippets, cfg, side):
        sides.append(side)
        return read(reader, video, snippets, cfg, side)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lofi_stage, "clips_of", recording)
        summary = lofi_stage.train(index, annotations, "training", settings(), base, "tuned", out / "backbone.pth",
                                     out / "backbone.json", out / "log.csv", out / "stage_a.json", device="cpu")
    return out, summary, sides


def test_each_fidelity_gives_its_snippets_and_side(decoded):
    index, annotations, _ = decoded
    cfg = LofiConfig()
    (video, *_), _ = lofi_stage.load_videos(index, annotations, "training", cfg)
    reader = lofi_stage.FrameReader(PIXELS, memory_mb=100)
    full, _ = video.view(1, 0)
    full_clips = lofi_stage.clips_of(reader, video, full, cfg, PIXELS)
    assert full_clips.shape == (video.length, 16, PIXELS, PIXELS, 3)
    vit = videomae.random_backbone("tiny", 0)
    for mode, (every, _) in MODES.items():
        side = lofi.side_of(mode, PIXELS, patch=16)
        assert side == SIDES[mode]
        snippets, _ = video.view(every, 0)
        clips = lofi_stage.clips_of(reader, video, snippets, cfg, side)
        assert clips.shape == (math.ceil(video.length / every), 16, side, side, 3)
        tokens, grid = vit.embed(clips)
        assert grid == (8, side // 16, side // 16) and tokens.shape[1] == 8 * (side // 16) ** 2
        voxels = clips[..., 0].numel() / full_clips[..., 0].numel()
        assert 0.2 < voxels < 0.32, mode  # about a quarter of full fidelity
        if side == PIXELS:  # T: the same clips as full fidelity, every 4th
            assert torch.equal(clips, full_clips[::every])
        else:  # the clip at a smaller side keeps the picture
            small = torch.nn.functional.interpolate(full_clips[::every, :, :, :, 0].float(), size=(side, side),
                                                    mode="area")
            assert (clips[..., 0] - small).abs().mean() < 4
    # A phase shifts the snippets and the ground truth with them.
    snippets, segments = video.view(4, 2)
    assert snippets[:2].tolist() == [2, 6]
    assert torch.allclose(segments * 4 + 2, video.segments)
    assert lofi.side_of("S", 16, patch=16) == 16  # never below one patch


def test_frames_read_by_seeking_equal_those_of_a_whole_read(decoded):
    index, annotations, _ = decoded
    (video, *_), _ = lofi_stage.load_videos(index, annotations, "training", LofiConfig())
    whole, seeking = lofi_stage.FrameReader(PIXELS, memory_mb=100), lofi_stage.FrameReader(PIXELS, memory_mb=0)
    for first, stop in ((0, 16), (37, 53), (video.frames - 5, video.frames + 11)):
        expected = whole.read(video, first, stop)
        assert expected.shape == (stop - first, PIXELS, PIXELS, 3)
        assert np.array_equal(seeking.read(video, first, stop), expected), (first, stop)
    assert list(whole.kept) == [video.name] and not seeking.kept
    assert np.array_equal(expected[-11:], np.repeat(expected[4:5], 11, 0))  # past the end: the last frame


def test_cyclic_schedules_visit_s_t_st_in_order(stage_a):
    cfg = LofiConfig(fidelity="cyclic")
    assert [lofi.mode_at(cfg, epoch, step=0) for epoch in range(5)] == ["S", "T", "ST", "S", "T"]
    short = LofiConfig(fidelity="short-cyclic", switch_every=2)
    assert [lofi.mode_at(short, 0, step) for step in range(7)] == ["S", "S", "T", "T", "ST", "ST", "S"]
    assert lofi.mode_at(LofiConfig(fidelity="ST"), 4, 9) == "ST"
    # In training: the standardisation pass and epoch 1 at S, then T, then ST (2 videos, batch 2).
    _, summary, sides = stage_a
    assert sides == [32, 32, 32, 32, 64, 64, 48, 48]
    assert {mode: step["side"] for mode, step in summary["steps"].items()} == SIDES


def small_net(trainable_blocks, checkpointing=True):
    torch.manual_seed(0)
    vit = videomae.random_backbone("tiny", 0)
    detector = Detector("head_only", vit.preset.width, 1, 3, head_config(HEAD))
    return lofi.EndToEnd(vit, detector, trainable_blocks, checkpointing)


def step_gradients(net):
    net.train()
    torch.manual_seed(1)
    clips = [torch.randint(0, 255, (n, 16, 32, 32, 3), dtype=torch.uint8) for n in (9, 6)]
    outputs, _ = net(clips, net.detector.head.max_stride)
    targets = [(torch.tensor([[1.0, 5.0]]), torch.tensor([1])), (torch.tensor([[0.0, 3.0]]), torch.tensor([2]))]
    net.detector.head.loss(outputs, targets)["loss"].backward()
    return {name: p.grad for name, p in net.named_parameters()}


def test_gradients_reach_exactly_the_trainable_blocks():
    grads = step_gradients(small_net(trainable_blocks=2))
    for name, grad in grads.items():
        trainable = name.startswith(("backbone.blocks.2.", "backbone.blocks.3.", "backbone.fc_norm.", "detector."))
        if trainable:
            assert grad is not None and grad.abs().sum() > 0, name
        else:
            assert grad is None, name
    whole = step_gradients(small_net(trainable_blocks=None))
    assert all(grad is not None for grad in whole.values())
    assert whole["backbone.patch_embed.proj.weight"].abs().sum() > 0
    # Checkpointing recomputes, it does not change the gradients.
    plain = step_gradients(small_net(trainable_blocks=None, checkpointing=False))
    for name, grad in whole.items():
        assert torch.allclose(grad, plain[name], rtol=1e-4, atol=1e-6), name
    with pytest.raises(InputError, match="trainable_blocks 5 exceeds the backbone's 4 blocks"):
        small_net(trainable_blocks=5)


def test_memory_estimate_matches_what_autograd_keeps_and_shrinks_with_fidelity():
    cfg, autocast = LofiConfig(checkpointing=False), torch.autocast("cpu", enabled=False)
    net = small_net(trainable_blocks=None, checkpointing=False).train()
    per_clip = {side: lofi.snippet_bytes(net, side, cfg, autocast, "cpu") for side in (32, 64)}
    clips = torch.zeros(6, 16, 64, 64, 3)
    # The backbone's share, measured on one clip, is what autograd keeps per clip of six; the
    # rest is the clip itself (uint8 and float) and the head's share.
    backbone_and_clip = saved_bytes(lambda: net.features(clips), net) / 6 + clips[0].numel() * 5
    assert 0 <= per_clip[64] - backbone_and_clip < 0.05 * per_clip[64]
    assert 3 < per_clip[64] / per_clip[32] < 4.5  # a quarter of the tokens
    checkpointed = small_net(trainable_blocks=None, checkpointing=True)
    assert lofi.snippet_bytes(checkpointed, 64, LofiConfig(), autocast, "cpu") < per_clip[64] / 2


def test_a_step_over_the_budget_or_at_full_fidelity_is_refused_before_training(decoded, tmp_path):
    net = small_net(trainable_blocks=None)
    autocast = torch.autocast("cpu", enabled=False)
    train_cfg = TrainConfig(batch=2)
    plan = lofi.plan_steps(net, ["S", "T"], PIXELS, LofiConfig(budget_mb=2000), train_cfg, autocast, "cpu")
    assert plan["S"][1] > plan["T"][1] >= net.detector.head.max_stride  # smaller snippets: more a step
    # One byte short of the shortest T step: S fits, T is refused.
    shortest = fixed_bytes(net) + plan["T"][2] * train_cfg.batch * net.detector.head.max_stride
    with pytest.raises(InputError, match=r"a step at fidelity T \(64 px, every 4 snippet\(s\)\) needs \d+ MB.*"
                                         r"the budget is [\d.]+ MB\. Raise lofi.budget_mb"):
        lofi.plan_steps(net, ["S", "T"], PIXELS, LofiConfig(budget_mb=(shortest - 1) / 2**20), train_cfg,
                        autocast, "cpu")
    # At one patch a side, S cannot halve the frames: it would be full fidelity.
    with pytest.raises(InputError, match="fidelity S would be full fidelity here: frames of 16 px are 1 patch"):
        lofi.plan_steps(net, ["S", "T"], 16, LofiConfig(), train_cfg, autocast, "cpu")
    assert list(lofi.plan_steps(net, ["T", "ST"], 16, LofiConfig(), train_cfg, autocast, "cpu")) == ["T", "ST"]
    index, annotations, base = decoded
    with pytest.raises(InputError, match="the budget is 1 MB"):
        lofi_stage.train(index, annotations, "training", settings(budget_mb=1), base, "tuned",
                           tmp_path / "backbone.pth", tmp_path / "backbone.json", tmp_path / "log.csv",
                           tmp_path / "stage_a.json", device="cpu")
    assert not list(tmp_path.iterdir())


def test_stage_b_caches_the_tuned_backbone_under_its_own_hash(stage_a, decoded, tmp_path):
    out, summary, _ = stage_a
    index, _, base = decoded
    tuned = backbone.read_description(out / "backbone.json")
    assert tuned["identity"] == summary["identity"] == f"sha256:{backbone.sha256(out / 'backbone.pth')}"
    assert summary["base"] == "random:0" != tuned["identity"]
    assert tuned["name"] == "tuned" and tuned["layers"] == [2, 4] and tuned["pixels"] == PIXELS
    # The checkpoint is in the official layout: it loads as any VideoMAE file does.
    state, ignored = videomae.read_checkpoint(out / "backbone.pth")
    assert not ignored and "blocks.3.mlp.fc2.weight" in state and "fc_norm.weight" in state
    video = index.parent / "videos" / f"{sorted(json.loads(index.read_text()))[0]}.mp4"
    stores = {name: cache.build(video, tmp_path / f"{name}.zarr", backbone.read_description(path), batch=4,
                                device="cpu")
              for name, path in (("random", base), ("tuned", out / "backbone.json"))}
    assert stores["tuned"]["identity"] == tuned["identity"] and stores["random"]["identity"] == "random:0"
    assert stores["tuned"]["pixels"] == PIXELS  # full fidelity
    pooled = {name: open_cache(tmp_path / f"{name}.zarr").read()["pooled"] for name in stores}
    assert pooled["tuned"].shape == pooled["random"].shape
    assert not torch.allclose(pooled["tuned"], pooled["random"], atol=1e-3)
    assert summary["trainable_parameters"] > videomae.load("tiny")[1]["parameters"]  # backbone and head
    # The same weights, saved again, have the same identity.
    lofi_stage.save_backbone(tmp_path / "again.pth", videomae.load("tiny", out / "backbone.pth")[0], {"base": "random:0"})
    lofi_stage.save_backbone(tmp_path / "twice.pth", videomae.load("tiny", out / "backbone.pth")[0], {"base": "random:0"})
    assert backbone.sha256(tmp_path / "again.pth") == backbone.sha256(tmp_path / "twice.pth")


def test_stage_a_killed_in_its_last_epoch_resumes_to_the_same_tuned_backbone(stage_a, decoded, tmp_path, monkeypatch):
    out, _, _ = stage_a
    index, annotations, base = decoded
    checkpoint, read, calls = tmp_path / "stage_a_checkpoint.pt", lofi_stage.clips_of, []

    def dies_in_epoch_three(*args):
        calls.append(1)
        if len(calls) == 2 + 2 * 2 + 1:  # 2 videos: the statistics, epochs 1 and 2, then epoch 3's first
            raise KeyboardInterrupt
        return read(*args)

    def run():
        return lofi_stage.train(index, annotations, "training", settings(), base, "tuned", tmp_path / "backbone.pth",
                                  tmp_path / "backbone.json", tmp_path / "log.csv", tmp_path / "stage_a.json",
                                  checkpoint_path=checkpoint, device="cpu")

    monkeypatch.setattr(lofi_stage, "clips_of", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        run()
    assert len(torch.load(checkpoint, weights_only=True)["log"]) == 2 and not (tmp_path / "backbone.pth").exists()
    calls.clear()
    monkeypatch.setattr(lofi_stage, "clips_of", lambda *args: calls.append(1) or read(*args))
    run()
    assert len(calls) == 2 + 2  # the statistics, then epoch 3 alone: resumed, not run again
    assert (tmp_path / "backbone.pth").read_bytes() == (out / "backbone.pth").read_bytes()
    assert not checkpoint.exists()


def stage_a_as(rank, decoded, port, out):
    """Stage A as process `rank` of two, as torchrun starts them."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    index, annotations, base = decoded
    lofi_stage.train(index, annotations, "training", settings(), base, "tuned", out / "backbone.pth",
                       out / "backbone.json", out / "log.csv", out / "stage_a.json", device="cpu")


def test_stage_a_in_two_processes_tunes_the_backbone_as_one_does(stage_a, decoded, tmp_path):
    """Two videos a step, one a process: the losses and the tuned backbone of one process."""
    out, _, _ = stage_a
    mp.start_processes(stage_a_as, (decoded, free_port(), tmp_path), nprocs=2, start_method="spawn")
    one, two = pd.read_csv(out / "log.csv"), pd.read_csv(tmp_path / "log.csv")
    torch.testing.assert_close(torch.tensor(two["loss"].values), torch.tensor(one["loss"].values), rtol=1e-4, atol=0)
    reference = torch.load(out / "backbone.pth", weights_only=True)
    tuned = torch.load(tmp_path / "backbone.pth", weights_only=True)
    assert tuned.keys() == reference.keys()
    for key, value in tuned.items():
        if torch.is_tensor(value):
            torch.testing.assert_close(value, reference[key], rtol=0, atol=3e-4, msg=key)
    assert json.loads((tmp_path / "stage_a.json").read_text())["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.json", "backbone.pth", "log.csv", "stage_a.json"]


def test_bad_lofi_settings_are_clear_errors():
    with pytest.raises(InputError, match="fidelity must be one of S, T, ST, cyclic, short-cyclic"):
        full_settings({"method": "lofi", "lofi": {"fidelity": "X"}})
    with pytest.raises(InputError, match="unexpected keyword argument 'budget'"):
        full_settings({"method": "lofi", "lofi": {"budget": 3}})
    full = full_settings({"method": "lofi", "head": HEAD, "lofi": {"trainable_blocks": 2}})
    assert full["lofi"]["fidelity"] == "cyclic" and full["lofi"]["trainable_blocks"] == 2
    assert full["head"]["width"] == 16 and full["head"]["sigma"] == HeadConfig().sigma
    assert full["train"]["epochs"] == TrainConfig().epochs


def test_a_bf16_backbone_trains_stage_a_under_autocast_near_its_fp32_losses(decoded, tmp_path):
    index, annotations, base = decoded
    losses = {}
    for precision in ("fp32", "bf16"):
        description = tmp_path / f"{precision}.json"
        write_json(description, backbone.describe("tiny", "tiny", pixels=PIXELS, layers=[2, 4], precision=precision))
        out = tmp_path / precision
        one_epoch = settings(fidelity="T") | {"train": {"epochs": 1, "warmup_epochs": 0, "lr": 1e-3}}
        lofi_stage.train(index, annotations, "training", one_epoch, description, "tuned",
                           out / "backbone.pth", out / "backbone.json", out / "log.csv", out / "stage_a.json",
                           device="cpu")
        losses[precision] = pd.read_csv(out / "log.csv")["loss"].iloc[0]  # the first epoch: before they drift apart
    assert losses["bf16"] != losses["fp32"]  # bfloat16 arithmetic in the forward
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_stage_a_tunes_an_internvideo2_backbone_whose_file_loads_as_the_authors_do(decoded, tmp_path):
    """LoFi knows a family only through its interface: InternVideo2 (tubelet 1, a class token)
    tunes end to end at low fidelity and saves a checkpoint in the authors' layout."""
    from actloc.backbones import internvideo2

    index, annotations, _ = decoded
    base = tmp_path / "iv2.json"
    write_json(base, backbone.describe("iv2", "tiny", pixels=56, layers=[2, 4], family="internvideo2"))
    out = tmp_path / "tuned"
    summary = lofi_stage.train(index, annotations, "training", settings(), base, "tuned", out / "backbone.pth",
                               out / "backbone.json", out / "log.csv", out / "stage_a.json", device="cpu")
    assert summary["base"] == "random:0"
    tuned, report = internvideo2.load("tiny", out / "backbone.pth")
    assert report["variant"] == "encoder" and report["ignored"] == [] and report["unexpected"] == []
    assert report["frames"] == 8  # its position table as the random preset's
    random = internvideo2.load("tiny")[0]
    assert not torch.equal(tuned.blocks[3].mlp.fc2.weight, random.blocks[3].mlp.fc2.weight)
    assert backbone.read_description(out / "backbone.json")["family"] == "internvideo2"
