"""actloc's InternVideo2 beside the authors' model code on the same random weights: every block's
patch tokens compared, and both forwards timed.

    python benchmarks/internvideo2_reference.py --reference PATH/TO/InternVideo [--models tiny 1B 6B-blocks ...]

PATH/TO/InternVideo is a checkout of github.com/OpenGVLab/InternVideo. Its three video
encoders are imported unmodified: the classifier (`InternVideo2/single_modality/models/
internvideo2.py`), the stage-1 pre-training model (`.../internvideo2_pretrain.py`) and the
stage-2 model's video encoder (`InternVideo2/multi_modality/models/backbones/internvideo2/
internvideo2.py`), each run on its non-fused path (no flash attention, no fused RMSNorm or
MLP). What they import only for other paths (timm's helpers, einops, flash_attn) is stood in
for here, so they run in actloc's environment on a CPU. The weights are drawn away from their
initial values (layer scales in 0.5-1.5, norms around 1, biases and tables around 0) so that
every part counts, saved as each variant's file is (stage 2's under `vision_encoder.`, beside a
text side) and read back through actloc's checkpoint reader. 1B needs ~9 GB of memory and a few
minutes on 2 cores; `6B-blocks` is 4 of the 6B's blocks at its full width.
"""

import argparse
import contextlib
import importlib
import io
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

from actloc.backbones import Preset, internvideo2, parts
from common import report

# name: (width, depth, heads, mlp ratio, pixels, actloc's preset or None for a custom depth, variant)
MODELS = {"tiny": (192, 4, 3, 4.0, 112, "tiny", "classifier"), "1B": (1408, 40, 16, 48 / 11, 224, "1B", "classifier"),
          "6B-blocks": (3200, 4, 25, 4.0, 224, None, "classifier"),
          "tiny-stage1": (192, 4, 3, 4.0, 112, "tiny", "stage1"),
          "tiny-stage2": (192, 4, 3, 4.0, 112, "tiny", "stage2")}
# variant: (the folder of the authors' file under the checkout, the file, its class)
SOURCES = {"classifier": ("InternVideo2/single_modality/models", "internvideo2", "InternVideo2"),
           "stage1": ("InternVideo2/single_modality/models", "internvideo2_pretrain", "PretrainInternVideo2"),
           "stage2": ("InternVideo2/multi_modality/models/backbones/internvideo2", "internvideo2",
                      "PretrainInternVideo2")}
FRAMES = 8


def stand_in(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def stand_ins():
    """Modules the authors' files import for their fused and training paths only."""
    for name in ("timm", "timm.models", "flash_attn", "flash_attn.modules", "flash_attn.ops"):
        stand_in(name)
    stand_in("timm.models.layers", DropPath=lambda rate: nn.Identity(),  # evaluation: no dropped paths
             to_2tuple=lambda x: x if isinstance(x, tuple) else (x, x),
             trunc_normal_=lambda tensor, std=1.0: nn.init.trunc_normal_(tensor, std=std))
    stand_in("timm.models.registry", register_model=lambda fn: fn)
    stand_in("einops", rearrange=None)
    stand_in("flash_attn.modules.mlp", FusedMLP=None)
    stand_in("flash_attn.ops.rms_norm", DropoutAddRMSNorm=None)


def authors_class(checkout, variant):
    """The authors' model class of `variant`, imported from `checkout`."""
    folder, module, name = SOURCES[variant]
    models = Path(checkout) / folder
    if not (models / f"{module}.py").is_file():
        sys.exit(f"{checkout}: no {folder}/{module}.py (a checkout of OpenGVLab/InternVideo?)")
    # Its package imports every model of the folder: load the files it needs as a package of their own.
    package = f"authors_{variant}"
    stand_in(package, __path__=[str(models)])
    stand_in(f"{package}.flash_attention_class", FlashAttention=None)
    with contextlib.redirect_stdout(io.StringIO()):
        return getattr(importlib.import_module(f"{package}.{module}"), name)


def run_authors(model, variant, x):
    """The authors' forward on standardised clips x, as far as their blocks (the hooks catch
    their tokens; what the pre-training models do after them needs their teachers' outputs)."""
    if variant == "classifier":
        model(x)
    elif variant == "stage2":
        model(x, x_vis_only=True)
    else:  # stage 1: no token masked; its decoders' step fails without the teachers' indices
        tokens = 1 + FRAMES * (x.shape[-1] // 14) ** 2
        with contextlib.suppress(RuntimeError):
            model(x, torch.zeros(len(x), tokens, dtype=torch.bool))


def compare(checkout, name, folder):
    width, depth, heads, ratio, pixels, preset_name, variant = MODELS[name]
    torch.manual_seed(0)
    extra = {"num_classes": 400} if variant == "classifier" else {}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its settings
        theirs = authors_class(checkout, variant)(
            img_size=pixels, patch_size=14, embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=ratio,
            num_frames=FRAMES, tubelet_size=1, use_flash_attn=False, use_fused_rmsnorm=False, use_fused_mlp=False,
            **extra).eval()
    with torch.no_grad():
        for key, value in theirs.named_parameters():
            if key.endswith("gamma"):
                value.uniform_(0.5, 1.5)
            elif "norm" in key and key.endswith("weight"):
                value.normal_(1.0, 0.1)
            elif key.endswith("bias") or key in ("pos_embed", "cls_token"):
                value.normal_(0.0, 0.02)
    path = Path(folder) / f"{name}.pth"
    state = theirs.state_dict()
    if variant == "stage2":  # the video-text model: its video encoder beside a text side
        state = {f"vision_encoder.{key}": value for key, value in state.items()}
        state["text_proj.weight"] = torch.zeros(2, 2)
    torch.save({"module" if variant == "stage1" else "model": state}, path)
    preset = Preset(width=width, depth=depth, heads=heads, mlp=int(width * ratio), patch=14, tubelet=1,
                    frames=FRAMES, pixels=pixels)
    if preset_name:
        ours, loaded = internvideo2.load(preset_name, path)
        assert ours.preset == preset, (ours.preset, preset)
    else:  # a depth no preset has: the same reading of the file, the model built at that depth
        state, variant, ignored = internvideo2.encoder_state(parts.read_state(path))
        ours = internvideo2.Backbone(preset, internvideo2.grid_of(state, preset, path)).eval()
        ours.load_state_dict({key: state[key] for key in ours.state_dict()})
        loaded = {"variant": variant, "ignored": ignored}
    clips = torch.randint(0, 256, (2, FRAMES, pixels, pixels, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    taps = []
    for block in theirs.blocks:
        block.register_forward_hook(lambda module, inputs, output: taps.append(output))
    with torch.inference_mode():
        start = time.perf_counter()
        run_authors(theirs, variant, parts.normalized(clips, ours.pixel_mean, ours.pixel_std))
        theirs_s = time.perf_counter() - start
        start = time.perf_counter()
        mine = ours(clips, list(range(1, depth + 1)))
        ours_s = time.perf_counter() - start
    assert len(taps) == depth, f"{name}: the authors' blocks ran {len(taps)} times, not {depth}"
    gaps = []
    for index, (their, own) in enumerate(zip(taps, mine), 1):
        their = their[:, 1:].reshape(own.shape)  # the patch tokens, behind the class token
        gap = (their - own).abs().max().item()
        gaps.append((gap / their.abs().max().item(), gap, index))
    relative, gap, block = max(gaps)
    return {"model": name, "width": width, "blocks": depth, "heads": heads, "clips": f"2 x {FRAMES} x {pixels} px",
            "authors' class": f"{SOURCES[variant][1]}.{SOURCES[variant][2]}", "variant read": loaded["variant"],
            "keys ignored": len(loaded["ignored"]), "keys unexpected": len(loaded.get("unexpected", [])),
            "worst block": block, "max abs diff": f"{gap:.2g}", "relative to max token": f"{relative:.2g}",
            "block 1 abs diff": f"{gaps[0][1]:.2g}", "authors' forward s": f"{theirs_s:.1f}",
            "actloc's forward s": f"{ours_s:.1f}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of OpenGVLab/InternVideo")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    stand_ins()
    with tempfile.TemporaryDirectory() as folder:
        rows = [compare(args.reference, name, folder) for name in args.models]
    report("internvideo2_reference", "InternVideo2: actloc's blocks beside the authors' code, same weights (CPU, fp32)",
           rows)


if __name__ == "__main__":
    main()
