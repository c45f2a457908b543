import argparse
import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from actloc import backbones, cli, media
from actloc.backbones import parts, videomae
from actloc.io import InputError
from actloc.methods.detector import Detector
from actloc.settings import HeadConfig, PartialConfig
from actloc.stages import backbone
from actloc.store import stores

GIANT_PARAMETERS = 1_011_000_000  # VideoMAEv2 ViT-g without its classifier, about 1.01 B


def official_layout(preset, final_norm="fc_norm", classes=0):
    """Key names and shapes of a published encoder, written out from docs/usage.md#backbones-and-checkpoints."""
    d, m, p = preset.width, preset.mlp, preset.patch
    layout = {"patch_embed.proj.weight": (d, 3, 2, p, p), "patch_embed.proj.bias": (d,)}
    for i in range(preset.depth):
        layout.update({
            f"blocks.{i}.norm1.weight": (d,), f"blocks.{i}.norm1.bias": (d,),
            f"blocks.{i}.attn.qkv.weight": (3 * d, d),
            f"blocks.{i}.attn.q_bias": (d,), f"blocks.{i}.attn.v_bias": (d,),
            f"blocks.{i}.attn.proj.weight": (d, d), f"blocks.{i}.attn.proj.bias": (d,),
            f"blocks.{i}.norm2.weight": (d,), f"blocks.{i}.norm2.bias": (d,),
            f"blocks.{i}.mlp.fc1.weight": (m, d), f"blocks.{i}.mlp.fc1.bias": (m,),
            f"blocks.{i}.mlp.fc2.weight": (d, m), f"blocks.{i}.mlp.fc2.bias": (d,),
        })
    if final_norm != "none":
        layout.update({f"{final_norm}.weight": (d,), f"{final_norm}.bias": (d,)})
    if classes:
        layout.update({"head.weight": (classes, d), "head.bias": (classes,)})
    return layout


def official_state(preset, final_norm="fc_norm", classes=400, seed=0):
    """Random weights under the official names, scaled so every block changes its input."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(preset, final_norm, classes).items():
        scale = 1.0 if key.endswith("norm1.weight") or key.endswith("norm2.weight") else 0.1
        state[key] = torch.randn(shape, generator=g) * scale + (1.0 if "norm" in key and "weight" in key else 0)
    return state


def reference_features(state, preset, clips, layer, final_norm="fc_norm"):
    """The official forward written out literally (NumPy-style loops over heads), pooled."""
    x = (clips.permute(0, 4, 1, 2, 3).float() - torch.tensor(parts.IMAGENET_MEAN).view(1, 3, 1, 1, 1)) \
        / torch.tensor(parts.IMAGENET_STD).view(1, 3, 1, 1, 1)
    p = preset.patch
    x = torch.nn.functional.conv3d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                                   stride=(2, p, p))
    t = x.shape[2]
    x = x.flatten(2).transpose(1, 2)
    n, d = x.shape[1], preset.width
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    table[:, 0::2], table[:, 1::2] = np.sin(table[:, 0::2]), np.cos(table[:, 1::2])
    x = x + (state["pos_embed"] if "pos_embed" in state else torch.tensor(table, dtype=torch.float32))
    ln = lambda v, k: torch.nn.functional.layer_norm(v, (d,), state[k + ".weight"], state[k + ".bias"], 1e-6)
    heads, hd = preset.heads, d // preset.heads
    for i in range(layer):
        b = f"blocks.{i}."
        h = ln(x, b + "norm1")
        qkv = h @ state[b + "attn.qkv.weight"].T
        q = qkv[..., :d] + state[b + "attn.q_bias"]
        k = qkv[..., d:2 * d]
        v = qkv[..., 2 * d:] + state[b + "attn.v_bias"]
        out = []
        for head in range(heads):
            s = slice(head * hd, (head + 1) * hd)
            weights = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) * hd ** -0.5, dim=-1)
            out.append(weights @ v[..., s])
        gamma_1, gamma_2 = state.get(b + "gamma_1", 1.0), state.get(b + "gamma_2", 1.0)  # layer scale, if any
        x = x + gamma_1 * (torch.cat(out, -1) @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"])
        h = ln(x, b + "norm2") @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))
        x = x + gamma_2 * (h @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"])
    last = layer == preset.depth
    if last and final_norm == "norm":
        x = ln(x, "norm")
    pooled, temporal = x.mean(1), x.view(x.shape[0], t, -1, d).mean(2)
    if last and final_norm == "fc_norm":
        pooled, temporal = ln(pooled, "fc_norm"), ln(temporal, "fc_norm")
    return pooled, temporal


def features(model, clips, layers):
    taps = model(clips, layers)
    return [(model.pool(x, layer), model.pool(x, layer, temporal=True)) for x, layer in zip(taps, layers)]


TINY = backbones.presets()["tiny"]


def random_clips(*shape):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.fixture(scope="module")
def clips():
    return random_clips(2, 16, 64, 48, 3)


@pytest.fixture(scope="module")
def native_clips():
    """The size the position table is built for, where the reference's 1-D table applies as is."""
    return random_clips(2, 16, TINY.pixels, TINY.pixels, 3)


@pytest.mark.parametrize("name", list(backbones.presets()))
def test_every_preset_has_the_published_key_layout(name):
    preset = backbones.presets()[name]
    with torch.device("meta"):  # shapes only: the giant's 1 B parameters are never allocated
        model = videomae.Backbone(preset)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_layout(preset)


def test_giant_is_videomaev2_vit_g():
    g = backbones.presets()["giant"]
    assert (g.width, g.depth, g.heads, g.mlp, g.patch) == (1408, 40, 16, 6144, 14)
    with torch.device("meta"):
        model = videomae.Backbone(g)
    assert abs(sum(p.numel() for p in model.parameters()) - GIANT_PARAMETERS) < 2_000_000
    assert backbones.default_layers(g.depth) == [10, 20, 30, 40]
    # A full giant checkpoint, as meta tensors, passes the shape check; a missing key does not.
    state = {k: torch.empty(s, device="meta") for k, s in official_layout(g, classes=710).items()}
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert parts.check_state("g.pth", shapes, {k: v for k, v in state.items() if not k.startswith("head")},
                             "giant") == []
    del state["blocks.39.attn.v_bias"]
    with pytest.raises(InputError, match="1 weight.* missing, e.g. blocks.39.attn.v_bias"):
        parts.check_state("g.pth", shapes, state, "giant")


@pytest.mark.parametrize("wrap", ["module", "model", "bare"])
def test_official_finetuned_checkpoint_loads_and_matches_the_reference(tmp_path, native_clips, wrap):
    state = official_state(TINY)
    if wrap == "bare":  # some files hold half-precision weights
        state = {k: v.half().float() for k, v in state.items()}
    saved = {"module": state} if wrap == "module" else \
        {"model": state, "epoch": 5, "args": argparse.Namespace(lr=1e-3)} if wrap == "model" else \
        {k: v.half() for k, v in state.items()}
    torch.save(saved, tmp_path / "ft.pth")
    model, report = videomae.load("tiny", tmp_path / "ft.pth")
    assert report["final_norm"] == "fc_norm" and report["ignored"] == ["head.bias", "head.weight"]
    assert report["unexpected"] == [] and not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.state_dict().values())
    with torch.no_grad():
        got = features(model, native_clips, [2, 4])
    for (pooled, temporal), layer in zip(got, [2, 4]):
        ref_pooled, ref_temporal = reference_features(state, TINY, native_clips, layer)
        assert pooled.shape == (2, TINY.width) and temporal.shape == (2, 8, TINY.width)
        torch.testing.assert_close(pooled, ref_pooled, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(temporal, ref_temporal, atol=2e-4, rtol=1e-4)


def test_pretraining_checkpoint_uses_encoder_weights_and_its_norm(tmp_path, native_clips):
    encoder = official_state(TINY, final_norm="norm", classes=0, seed=2)
    state = {f"encoder.{k}": v for k, v in encoder.items()}
    state.update({"decoder.blocks.0.norm1.weight": torch.ones(8), "encoder_to_decoder.weight": torch.ones(8, 8),
                  "mask_token": torch.zeros(1, 1, 8)})
    torch.save({"model": state}, tmp_path / "pt.pth")
    model, report = videomae.load("tiny", tmp_path / "pt.pth")
    assert report["final_norm"] == "norm"
    assert report["ignored"] == ["decoder.blocks.0.norm1.weight", "encoder_to_decoder.weight", "mask_token"]
    with torch.no_grad():
        (pooled, _), = features(model, native_clips, [4])
    reference = reference_features(encoder, TINY, native_clips, 4, "norm")[0]
    torch.testing.assert_close(pooled, reference, atol=2e-4, rtol=1e-4)


def test_wrong_shapes_missing_and_unexpected_keys(tmp_path):
    torch.save(official_state(backbones.presets()["small"]), tmp_path / "small.pth")
    with pytest.raises(InputError, match=r"small.pth: does not fit preset 'tiny'.*"
                                         r"patch_embed.proj.weight: checkpoint \[384, 3, 2, 16, 16\], preset \[192"):
        videomae.load("tiny", tmp_path / "small.pth")
    state = official_state(TINY)
    del state["blocks.3.mlp.fc2.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(InputError, match="missing.pth: 1 weight.* missing, e.g. blocks.3.mlp.fc2.weight"):
        videomae.load("tiny", tmp_path / "missing.pth")
    state = official_state(TINY)
    state["blocks.4.attn.q_bias"] = torch.zeros(TINY.width)
    torch.save(state, tmp_path / "extra.pth")
    assert videomae.load("tiny", tmp_path / "extra.pth")[1]["unexpected"] == ["blocks.4.attn.q_bias"]
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"junk.pth: not a PyTorch checkpoint \(Unsupported operand"):
        videomae.load("tiny", tmp_path / "junk.pth")
    with pytest.raises(InputError, match="absent.pth: checkpoint not found"):
        videomae.load("tiny", tmp_path / "absent.pth")


def test_layer_scale_and_learnt_positions_are_loaded_and_applied(tmp_path, native_clips):
    state = official_state(TINY)
    for i in range(TINY.depth):
        state[f"blocks.{i}.gamma_1"] = torch.full((TINY.width,), 0.5)
        state[f"blocks.{i}.gamma_2"] = torch.full((TINY.width,), 0.25)
    state["pos_embed"] = torch.zeros(1, 8 * 7 * 7, TINY.width)
    torch.save(state, tmp_path / "ls.pth")
    model, report = videomae.load("tiny", tmp_path / "ls.pth")
    assert report["layer_scale"] and report["learnt_positions"]
    assert torch.equal(model.blocks[3].gamma_2, state["blocks.3.gamma_2"])
    assert torch.count_nonzero(model.pos_embed) == 0
    # Applied in the forward: the blocks' branches scaled by 0.5 and 0.25, the learnt (zero) positions.
    with torch.no_grad():
        (pooled, temporal), = features(model, native_clips, [3])
    ref_pooled, ref_temporal = reference_features(state, TINY, native_clips, 3)
    torch.testing.assert_close(pooled, ref_pooled, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(temporal, ref_temporal, atol=2e-4, rtol=1e-4)
    unscaled = reference_features({k: v for k, v in state.items() if "gamma" not in k}, TINY, native_clips, 3)[0]
    assert not torch.allclose(pooled, unscaled, atol=1e-2)  # the scales matter here


@pytest.mark.parametrize("width", [384, 1408])  # ViT-S, ViT-g
def test_sinusoid_table_equals_the_official_float64_formula(width):
    # The official code: pos / 10000 ** (2 * (j // 2) / width) in Python floats (float64),
    # sin on even channels, cos on odd ones, then float32. 1,568 positions: ViT-g's 8 x 14 x 14.
    positions = 1568
    angle = np.arange(positions)[:, None] / np.power(10000, 2 * (np.arange(width) // 2) / width)[None]
    angle[:, 0::2], angle[:, 1::2] = np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])
    official = torch.from_numpy(angle.astype(np.float32))[None]
    # An exponent rounded to float32 first is off by up to 3e-5 at these positions.
    torch.testing.assert_close(videomae.sinusoid_table(positions, width), official, rtol=0, atol=1e-6)


def test_position_table_is_time_major_and_interpolated_for_other_sizes(clips):
    model = videomae.Backbone(TINY)
    t, h, w = model.native_grid
    assert model.position_table((t, h, w)) is model.pos_embed
    # A table that depends on the time step only keeps its per-step rows at another pixel size.
    per_step = torch.arange(t, dtype=torch.float32).repeat_interleave(h * w)
    model.pos_embed.copy_(per_step[None, :, None].expand(1, -1, TINY.width))
    table = model.position_table((t, 4, 3))
    assert table.shape == (1, t * 12, TINY.width)
    torch.testing.assert_close(table[0, :, 0], torch.arange(t, dtype=torch.float32).repeat_interleave(12))
    tokens, grid = model.embed(clips)  # 16 x 64 x 48 clips -> 8 x 4 x 3 tokens
    assert grid == (8, 4, 3) and tokens.shape == (2, 96, TINY.width)
    with pytest.raises(ValueError, match="do not divide"):
        model.embed(clips[:, :, :60])


def test_forward_runs_only_the_blocks_it_needs(clips):
    model = videomae.random_backbone("tiny", 0)
    called = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, i=i: called.append(i))
    with torch.no_grad():
        taps = model(clips, [2, 1])
    assert called == [0, 1] and [x.shape for x in taps] == [(2, 8, 12, TINY.width)] * 2
    with pytest.raises(ValueError, match="layers must be within 1..4"):
        model(clips, [5])


def test_random_backbone_is_fixed_by_its_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = (videomae.random_backbone("tiny", s) for s in (0, 0, 1))
    assert torch.rand(1) == before
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    assert a.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_describe_records_identity_and_checks_settings(tmp_path):
    settings = backbone.describe("demo", "tiny")
    assert settings["identity"] == "random:0" and settings["layers"] == [1, 2, 3, 4]
    assert settings["pixels"] == 112 and settings["parameters"] > 2e6
    torch.save(official_state(TINY), tmp_path / "ft.pth")
    settings = backbone.describe("ft", "tiny", tmp_path / "ft.pth", layers=[4, 2], temporal=False)
    assert settings["identity"] == "sha256:" + hashlib.sha256((tmp_path / "ft.pth").read_bytes()).hexdigest()
    assert settings["layers"] == [2, 4] and settings["size_bytes"] == (tmp_path / "ft.pth").stat().st_size
    with pytest.raises(InputError, match=r"layers \[2, 5\] outside 1..4"):
        backbone.describe("x", "tiny", layers=[2, 5])
    with pytest.raises(InputError, match="pixels 100 is not a multiple of the patch size 16"):
        backbone.describe("x", "tiny", pixels=100)
    with pytest.raises(InputError, match="unknown videomae preset 'enormous'"):
        backbone.describe("x", "enormous")


# A backbone family of its own, as a user would add one: one module (docs/extending.md#adding-a-backbone).
TOY_FAMILY = '''
import torch
from torch import nn

from actloc.backbones import Preset

PRESETS = {"toy": {"width": 24, "depth": 3, "heads": 1, "mlp": 24, "patch": 8, "tubelet": 1, "frames": 16,
                   "pixels": 32}}


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.linear(x))


class Toy(nn.Module):
    """Each frame's 8 x 8 patches projected, then residual blocks of one linear layer."""

    def __init__(self, preset, first_block=0):
        super().__init__()
        self.preset = preset
        self.embedding = nn.Linear(3 * preset.tubelet * preset.patch**2, preset.width)
        self.blocks = nn.ModuleList(Block(preset.width) if index >= first_block else nn.Identity()
                                    for index in range(preset.depth))

    @property
    def stem(self):
        return [self.embedding]

    def embed(self, clips):
        batch, frames, height, width, _ = clips.shape
        p, t = self.preset.patch, self.preset.tubelet
        grid = (frames // t, height // p, width // p)
        x = clips.float().div(255).reshape(batch, grid[0], t, grid[1], p, grid[2], p, 3)
        return self.embedding(x.permute(0, 1, 3, 5, 2, 4, 6, 7).flatten(4).flatten(1, 3)), grid

    def run_blocks(self, x, grid, start, layers, run=None):
        taps = {}
        for index in range(start + 1, max(layers) + 1):
            block = self.blocks[index - 1]
            x = run(index, block, x) if run else block(x)
            if index in layers:
                taps[index] = x.view(x.shape[0], grid[0], grid[1] * grid[2], -1)
        return [taps[layer] for layer in layers]

    def forward(self, clips, layers):
        return self.run_blocks(*self.embed(clips), 0, layers)

    def pool(self, tokens, layer, temporal=False):
        return tokens.mean(2) if temporal else tokens.mean((1, 2))


def upper_blocks(preset, architecture, first_block):
    return Toy(Preset(**PRESETS[preset]), first_block)


def load(preset, checkpoint=None, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Toy(Preset(**PRESETS[preset]))
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    report = {"checkpoint": checkpoint and str(checkpoint), "preset": preset, "architecture": {},
              "parameters": sum(p.numel() for p in model.parameters())}
    return model.requires_grad_(False).eval(), report
'''


def test_a_registered_toy_family_is_described_and_cached_through_the_cli(tmp_path, monkeypatch, normalized):
    (tmp_path / "toy_family.py").write_text(TOY_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert backbones.presets("toy_family")["toy"].tubelet == 1 and "toy_family" not in sys.modules  # read, not imported
    video, _ = normalized  # 30 frames at 10 fps
    assert cli.main(["backbone", "--name", "toy", "--family", "toy_family", "--preset", "toy", "--layers", "1", "3",
                     "--tokens", "--token-block", "2", "--out", tmp_path / "toy.json"]) == 0
    description = json.loads((tmp_path / "toy.json").read_text())
    assert description["family"] == "toy_family" and description["tubelet"] == 1
    assert description["block_tokens"] == {"block": 2, "grid": 4}
    assert cli.main(["cache", video, "--backbone", tmp_path / "toy.json", "--out-dir", tmp_path / "cache",
                     "--snippet-frames", "16", "--stride", "4"]) == 0
    store = stores.open_cache(tmp_path / "cache" / "pattern.zarr")
    assert store.attrs["family"] == "toy_family" and store.attrs["tubelet"] == 1 and store.snippets == 5
    read = store.read(temporal=True, tokens=True)
    assert read["temporal"].shape == (2, 5, 16, 24)  # a step a frame: tubelet 1
    assert read["block_tokens"].shape == (1, 5, 16, 16, 24)
    model, _ = backbones.get("toy_family").load("toy")
    frames = torch.from_numpy(np.stack(list(media.iter_frames(video, size=32))))
    taps = model(frames[None, 4:20], [1, 3])  # the second snippet: frames 4-19
    expected = torch.stack([model.pool(tap, layer) for tap, layer in zip(taps, [1, 3])])[:, 0]
    torch.testing.assert_close(read["pooled"][:, 1].float(), expected, atol=2e-3, rtol=2e-3)  # float16 as stored
    # partial rebuilds block 3 from the family's upper_blocks and the cached tokens of block 2 (at
    # the full 4 x 4 grid: exact): its adapters start at zero, so it recomputes the cached tap.
    net = Detector("partial", 24, 2, 3, HeadConfig(width=16, levels=2, regression_ranges=((0, 4), (4, 1e4))),
                   PartialConfig(losa={"reduction": 2, "heads": 2}), store.attrs)
    net.features.load_backbone(description, store.attrs)
    batch = {name: x[None].float() for name, x in read.items()}
    with torch.no_grad():
        pooled, temporal = net.features.upper_taps(batch["pooled"], batch["temporal"], batch["block_tokens"],
                                                   torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(pooled[0, 1].float(), read["pooled"][1].float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(temporal[0, 1].float(), read["temporal"][1].float(), atol=2e-3, rtol=2e-3)


def test_an_unknown_family_or_preset_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown backbone family 'nope': no module nope"):
        backbones.presets("nope")
    with pytest.raises(ValueError, match=r"unknown preset 'gaint' of backbone family videomae; one of tiny, small"):
        backbones.preset("videomae", "gaint")
    (tmp_path / "bare_family.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="module bare_family declares no PRESETS"):
        backbones.presets("bare_family")
