"""InternVideo2 (actloc.backbones.internvideo2): the authors' key layouts at 1B and 6B, a
reference forward written from their description, the published checkpoints' variants, and the
tiny preset through the backbone, cache, train (losa, partial) and infer commands."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from actloc import backbones, cli
from actloc.backbones import internvideo2, parts
from actloc.io import InputError
from actloc.stages import decode
from actloc.store.stores import open_cache
from conftest import run_ffmpeg

CLIP_WIDTH, TEACHER_WIDTH, MAE_TEACHER_WIDTH = 768, 3200, 1408  # the attention pool's output; the teachers'
IGNORED = {"classifier": 18, "stage1": 30, "stage2": 23 + 3}  # as the authors' code has them (+ stage 2's text side)


def published_layout(width, depth, mlp, frames=8, side=16, variant="classifier", classes=400):
    """{key: shape} of the authors' checkpoints (InternVideo2's single_modality/models/
    internvideo2.py and internvideo2_pretrain.py; the stage-2 model holds its video encoder
    (multi_modality/models/backbones/internvideo2/internvideo2.py) under `vision_encoder.` beside
    the text side). benchmarks/internvideo2_reference.py checked the three against that code."""
    tokens = frames * side * side
    layout = {"patch_embed.proj.weight": (width, 3, 1, 14, 14), "patch_embed.proj.bias": (width,),
              "cls_token": (1, 1, width), "pos_embed": (1, 1 + tokens, width)}
    for i in range(depth):
        layout.update({f"blocks.{i}.{key}": shape for key, shape in {
            "norm1.weight": (width,), "attn.qkv.weight": (3 * width, width), "attn.q_norm.weight": (width,),
            "attn.k_norm.weight": (width,), "attn.proj.weight": (width, width), "attn.proj.bias": (width,),
            "ls1.gamma": (width,), "norm2.weight": (width,), "mlp.fc1.weight": (mlp, width), "mlp.fc1.bias": (mlp,),
            "mlp.fc2.weight": (width, mlp), "mlp.fc2.bias": (width,), "ls2.gamma": (width,)}.items()})
    for part in "qkv":
        layout.update({f"clip_projector.norm1_{part}.weight": (width,), f"clip_projector.norm1_{part}.bias": (width,),
                       f"clip_projector.cross_attn.{part}.weight": (width, width),
                       f"clip_projector.cross_attn.{part}_bias": (width,)})
    layout.update({"clip_projector.cross_attn.proj.weight": (CLIP_WIDTH, width),
                   "clip_projector.cross_attn.proj.bias": (CLIP_WIDTH,)})
    if variant == "classifier":
        layout.update({"fc_norm.weight": (CLIP_WIDTH,), "fc_norm.bias": (CLIP_WIDTH,),
                       "head.weight": (classes, CLIP_WIDTH), "head.bias": (classes,)})
    else:  # the pre-training models: CLIP (and for stage 1 MAE) decoders to their teachers, their tables
        layout.update({"clip_pos_embed": (1, 1 + tokens, width),
                       "clip_decoder.0.head.weight": (TEACHER_WIDTH, width),
                       "clip_decoder.0.head.bias": (TEACHER_WIDTH,), "clip_decoder.0.norm.weight": (TEACHER_WIDTH,),
                       "clip_decoder.0.norm.bias": (TEACHER_WIDTH,),
                       "final_clip_decoder.head.weight": (CLIP_WIDTH, CLIP_WIDTH),
                       "final_clip_decoder.head.bias": (CLIP_WIDTH,), "final_clip_decoder.norm.weight": (CLIP_WIDTH,),
                       "final_clip_decoder.norm.bias": (CLIP_WIDTH,)})
    if variant == "stage1":
        layout.update({"mae_pos_embed": (1, tokens, width), "mae_decoder.0.head.0.weight": (width, width),
                       "mae_decoder.0.head.0.bias": (width,), "mae_decoder.0.head.2.weight": (MAE_TEACHER_WIDTH, width),
                       "mae_decoder.0.head.2.bias": (MAE_TEACHER_WIDTH,),
                       "mae_decoder.0.norm.weight": (MAE_TEACHER_WIDTH,), "mae_decoder.0.norm.bias": (MAE_TEACHER_WIDTH,)})
    elif variant == "stage2":
        layout = {f"vision_encoder.{key}": shape for key, shape in layout.items()}
        layout.update({"vision_proj.weight": (512, CLIP_WIDTH), "text_encoder.embeddings.word_embeddings.weight":
                       (30522, 1024), "temp": ()})
    return layout


def meta_state(layout):
    return {key: torch.empty(shape, device="meta") for key, shape in layout.items()}


def preset(name):
    return backbones.preset("internvideo2", name)


@pytest.mark.parametrize("name, other, parameters", [("1B", "6B", 1.01e9), ("6B", "1B", 5.91e9)])
def test_both_published_sizes_load_their_key_layout_and_refuse_the_other(name, other, parameters):
    own = preset(name)
    for variant in ("classifier", "stage1", "stage2"):
        model, report = internvideo2.from_state(meta_state(published_layout(own.width, own.depth, own.mlp,
                                                                            variant=variant)), name, "ckpt.pth")
        assert report["variant"] == variant and report["unexpected"] == [] and report["frames"] == 8
        assert len(report["ignored"]) == IGNORED[variant]
        assert all(key.startswith(("clip_", "fc_norm", "head", "final_clip", "mae_", "vision_proj", "text_", "temp"))
                   for key in report["ignored"])
        assert any(key.startswith("clip_projector.") for key in report["ignored"])
        assert model.architecture == {"qkv_bias": False, "qk_norm": True, "layer_scale": True}
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(parameters, rel=5e-3)
    # The clips' length comes from the checkpoint's own position table: 16 frames as published.
    _, report = internvideo2.from_state(meta_state(published_layout(own.width, own.depth, own.mlp, frames=16)),
                                        name, "f16.pth")
    assert report["frames"] == 16
    wrong = preset(other)
    with pytest.raises(InputError, match=f"ckpt.pth: does not fit preset '{name}'"):
        internvideo2.from_state(meta_state(published_layout(wrong.width, wrong.depth, wrong.mlp)), name, "ckpt.pth")


def rms(x, weight):
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def reference_patch_tokens(state, heads, clips, layer):
    """The patch tokens leaving block `layer` by the authors' description, written out on the
    checkpoint's tensors: ImageNet-standardised frames, 1 x 14 x 14 patches behind the class
    token, the table added, pre-RMSNorm blocks with RMSNorm over all heads' queries and keys,
    softmax attention and layer-scaled residuals."""
    x = (clips.permute(0, 4, 1, 2, 3).float() - torch.tensor(parts.IMAGENET_MEAN).view(1, 3, 1, 1, 1)) \
        / torch.tensor(parts.IMAGENET_STD).view(1, 3, 1, 1, 1)
    x = F.conv3d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=(1, 14, 14))
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1) + state["pos_embed"]
    batch, tokens, width = x.shape
    for i in range(layer):
        def w(key):
            return state[f"blocks.{i}.{key}"]
        q, k, v = (rms(x, w("norm1.weight")) @ w("attn.qkv.weight").T).split(width, dim=-1)
        q, k = rms(q, w("attn.q_norm.weight")), rms(k, w("attn.k_norm.weight"))
        q, k, v = (t.reshape(batch, tokens, heads, -1).transpose(1, 2) for t in (q, k, v))
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, tokens, width)
        x = x + w("ls1.gamma") * (out @ w("attn.proj.weight").T + w("attn.proj.bias"))
        hidden = F.gelu(rms(x, w("norm2.weight")) @ w("mlp.fc1.weight").T + w("mlp.fc1.bias"))
        x = x + w("ls2.gamma") * (hidden @ w("mlp.fc2.weight").T + w("mlp.fc2.bias"))
    return x[:, 1:]


def tiny_checkpoint(seed=0):
    """A random state dict in the classifier's layout at the tiny preset, no part at its init."""
    tiny = preset("tiny")
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in published_layout(tiny.width, tiny.depth, tiny.mlp, side=tiny.pixels // 14).items():
        centre = 1.0 if key.endswith(("gamma", "norm.weight", "norm1.weight", "norm2.weight")) else 0.0
        state[key] = centre + 0.1 * torch.randn(shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def clips():
    return torch.randint(0, 256, (2, 8, 112, 112, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_every_block_follows_the_reference_forward(tmp_path, clips):
    state = tiny_checkpoint()
    torch.save({"model": state}, tmp_path / "k400.pth")
    model, report = internvideo2.load("tiny", tmp_path / "k400.pth")
    assert report["variant"] == "classifier" and report["unexpected"] == [] and len(report["ignored"]) == 18
    with torch.no_grad():
        taps = model(clips, [1, 2, 3, 4])
        for layer, tap in enumerate(taps, 1):
            expected = reference_patch_tokens(state, 3, clips, layer).view(tap.shape)
            torch.testing.assert_close(tap, expected, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(model.pool(taps[3], 4), taps[3].mean((1, 2)))
        torch.testing.assert_close(model.pool(taps[3], 4, temporal=True), taps[3].mean(2))
    # Its state dict is a checkpoint it loads: the same tokens again.
    torch.save(model.state_dict(), tmp_path / "saved.pth")
    again, _ = internvideo2.load("tiny", tmp_path / "saved.pth")
    with torch.no_grad():
        assert torch.equal(again(clips, [4])[0], taps[3])


def test_stage_one_stage_two_and_a_separable_table_load_the_same_encoder(tmp_path, clips):
    state = tiny_checkpoint()
    tiny = preset("tiny")
    with torch.no_grad():
        expected = internvideo2.from_state(dict(state), "tiny", "k400.pth")[0](clips, [2])[0]
    stage1 = {**{k: v for k, v in state.items() if not k.startswith(("fc_norm", "head"))},
              "clip_pos_embed": state["pos_embed"], "mae_decoder.0.head.0.weight": torch.zeros(tiny.width, tiny.width)}
    stage2 = {f"vision_encoder.{k}": v for k, v in state.items()} | {"text_encoder.x": torch.zeros(3),
                                                                    "vision_proj.weight": torch.zeros(2, 2)}
    for name, file, variant in (("s1.pth", {"module": stage1}, "stage1"), ("s2.pth", stage2, "stage2")):
        torch.save(file, tmp_path / name)
        model, report = internvideo2.load("tiny", tmp_path / name)
        assert report["variant"] == variant and report["unexpected"] == []
        with torch.no_grad():
            assert torch.equal(model(clips, [2])[0], expected), name
    assert "text_encoder.x" in report["ignored"] and "vision_encoder.head.weight" not in report["ignored"]
    # A table of separable parts (sep_pos_embed) is the class row, then time + space for each token.
    separable = {k: v for k, v in state.items() if k != "pos_embed"}
    separable |= {"pos_embed_cls": torch.randn(1, 1, tiny.width), "pos_embed_temporal": torch.randn(1, 8, tiny.width),
                  "pos_embed_spatial": torch.randn(1, 64, tiny.width)}
    model, _ = internvideo2.from_state(dict(separable), "tiny", "sep.pth")
    table = model.pos_embed[0]
    assert torch.equal(table[0], separable["pos_embed_cls"][0, 0])
    assert torch.equal(table[1 + 3 * 64 + 5],
                       separable["pos_embed_temporal"][0, 3] + separable["pos_embed_spatial"][0, 5])


def test_the_random_preset_and_its_position_table(clips):
    a, b = internvideo2.load("tiny", seed=0)[0], internvideo2.load("tiny", seed=1)[0]
    assert not torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    table = a.pos_embed[0]
    assert torch.equal(table[0], torch.zeros(192))  # the class token's row
    # a quarter of the channels for time: equal along a frame's tokens, changing between frames
    assert torch.equal(table[1:65, :48], table[1:2, :48].expand(64, -1))
    assert not torch.equal(table[1, :48], table[65, :48])
    torch.testing.assert_close(table[1 + 64 * 2, :48:24], torch.tensor([math.sin(2.0), math.cos(2.0)]))
    with torch.no_grad():
        # 16 frames: the table is interpolated in time (the class row kept); blocks run as at 8
        x, grid = a.embed(torch.cat([clips, clips], 1))
        assert grid == (16, 8, 8) and x.shape == (2, 1 + 16 * 64, 192)
        # partial's cached grid tokens run without the class token
        (tap,) = a.run_blocks(x[:, 1:], grid, 0, [2])
        assert tap.shape == (2, 16, 64, 192)
        with pytest.raises(ValueError, match="1026 tokens are not a 16x8x8 grid"):
            a.run_blocks(torch.cat([x, x[:, :1]], 1), grid, 0, [2])


def test_a_broken_table_is_one_clear_error():
    state = tiny_checkpoint()
    state["pos_embed"] = state["pos_embed"][:, :50]
    with pytest.raises(InputError, match=r"bad.pth: pos_embed \[1, 50, 192\] is no table of a class token and t x 8"):
        internvideo2.from_state(state, "tiny", "bad.pth")
    # A VideoMAE file given to this family
    with pytest.raises(InputError, match="vm.pth: holds no pos_embed, the position table of every InternVideo2 file"):
        internvideo2.from_state(backbones.get("videomae").load("tiny")[0].state_dict(), "tiny", "vm.pth")


def test_the_backbone_command_takes_any_multiple_of_its_patch(tmp_path, capfd):
    # 14 px: one patch a frame, as the demo's 16 px are for VideoMAE
    assert cli.main(["backbone", "--name", "iv2", "--family", "internvideo2", "--preset", "tiny", "--pixels", "14",
                     "--out", str(tmp_path / "iv2.json")]) == 0
    assert json.loads((tmp_path / "iv2.json").read_text())["pixels"] == 14
    assert cli.main(["backbone", "--name", "iv2", "--family", "internvideo2", "--preset", "tiny", "--pixels", "16",
                     "--out", str(tmp_path / "bad.json")]) == 1
    assert "backbone iv2: pixels 16 is not a multiple of the patch size 14" in capfd.readouterr().err
    assert not (tmp_path / "bad.json").exists()


PIXELS = 28  # 2 x 2 patches of 14


@pytest.mark.slow
def test_the_tiny_preset_caches_and_trains_losa_and_partial_through_the_cli(tmp_path, capfd):
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=5", "-c:v", "libx264", tmp_path / "src.mp4")
    decode.normalize(tmp_path / "src.mp4", tmp_path / "a.mp4", fps=10, short_side=PIXELS)
    for name in "bc":
        shutil.copy(tmp_path / "a.mp4", tmp_path / f"{name}.mp4")
    assert cli.main(["backbone", "--name", "iv2", "--family", "internvideo2", "--preset", "tiny", "--pixels",
                     str(PIXELS), "--layers", "2", "4", "--tokens", "--out", str(tmp_path / "iv2.json")]) == 0
    description = json.loads((tmp_path / "iv2.json").read_text())
    assert description["family"] == "internvideo2" and description["tubelet"] == 1
    assert description["block_tokens"] == {"block": 2, "grid": 2, "qkv_bias": False, "qk_norm": True,
                                           "layer_scale": True}
    assert cli.main(["cache", *(str(tmp_path / f"{n}.mp4") for n in "abc"), "--backbone", str(tmp_path / "iv2.json"),
                     "--out-dir", str(tmp_path / "cache"), "--snippet-frames", "16", "--stride", "4"]) == 0
    store = open_cache(tmp_path / "cache" / "a.zarr")
    assert store.attrs["family"] == "internvideo2" and store.attrs["tubelet"] == 1
    read = store.read(temporal=True, tokens=True)
    assert read["temporal"].shape == (2, store.snippets, 16, 192)  # a step a frame
    assert read["block_tokens"].shape == (1, store.snippets, 16, 4, 192)
    database = {name: {"subset": subset, "duration": 5.0, "annotations": [{"segment": [1.0, 3.0], "label": "x"}]}
                for name, subset in (("a", "training"), ("b", "training"), ("c", "testing"))}
    (tmp_path / "gt.json").write_text(json.dumps({"classes": ["x", "y"], "database": database}))
    assert cli.main(["cache-index", "--annotations", str(tmp_path / "gt.json"), "--folder", str(tmp_path / "cache"),
                     "--backbone", str(tmp_path / "iv2.json"), "--out", str(tmp_path / "index.json")]) == 0
    common = ["--index", tmp_path / "index.json", "--annotations", tmp_path / "gt.json", "--device", "cpu"]
    head = {"width": 16, "levels": 2, "regression_ranges": [[0, 4], [4, 1e4]]}
    for method, own in (("losa", {"losa": {"reduction": 4, "heads": 4}}),
                        ("partial", {"partial": {"losa": {"reduction": 4, "heads": 4}}})):
        out = tmp_path / method
        run = {"method": method, "head": head, "train": {"epochs": 2, "warmup_epochs": 0}, **own}
        assert cli.main([str(a) for a in ["train", *common, "--subset", "training", "--settings", json.dumps(run),
                                           "--backbone", tmp_path / "iv2.json", "--out-model", out / "model.pt",
                                           "--out-log", out / "log.csv", "--out-summary", out / "train.json"]]) == 0
        assert json.loads((out / "train.json").read_text())["trainable_parameters"] > 0
        assert cli.main([str(a) for a in ["infer", *common, "--subset", "testing", "--model", out / "model.pt",
                                           "--out", out / "detections.json"]]) == 0
        detections = json.loads((out / "detections.json").read_text())["results"]["c"]
        assert detections and all(0 <= d["segment"][0] < d["segment"][1] <= 5.0 for d in detections)
