"""actloc's InternVideo2 beside the authors' model code on the same random weights: every block's
patch tokens compared, and both forwards timed.

    python benchmarks/internvideo2_reference.py --reference PATH/TO/InternVideo [--models tiny 1B 6B-blocks]

PATH/TO/InternVideo is a checkout of github.com/OpenGVLab/InternVideo; its
`InternVideo2/single_modality/models/internvideo2.py` is imported unmodified and run on its
non-fused path (no flash attention, no fused RMSNorm or MLP). What it imports only for other
paths (timm's helpers, einops, flash_attn) is stood in for here, so it runs in actloc's
environment on a CPU. The weights are drawn away from their initial values (layer scales in
0.5-1.5, norms around 1, biases and tables around 0) so that every part counts, saved in the
authors' classifier layout and read back through actloc's checkpoint reader. 1B needs ~9 GB of
memory and a few minutes on 2 cores; `6B-blocks` is 4 of the 6B's blocks at its full width.
"""

import argparse
import contextlib
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

# name: (width, depth, heads, mlp ratio, pixels, actloc's preset or None for a custom depth)
MODELS = {"tiny": (192, 4, 3, 4.0, 112, "tiny"), "1B": (1408, 40, 16, 48 / 11, 224, "1B"),
          "6B-blocks": (3200, 4, 25, 4.0, 224, None)}
FRAMES = 8


def stand_in(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def authors_model_class(checkout):
    """The authors' InternVideo2 class, imported from `checkout` with stand-ins for what only
    their fused or training paths import."""
    models = Path(checkout) / "InternVideo2" / "single_modality" / "models"
    if not (models / "internvideo2.py").is_file():
        sys.exit(f"{checkout}: no InternVideo2/single_modality/models/internvideo2.py (a checkout of "
                 "OpenGVLab/InternVideo?)")
    for name in ("timm", "timm.models", "flash_attn", "flash_attn.modules", "flash_attn.ops"):
        stand_in(name)
    stand_in("timm.models.layers", DropPath=lambda rate: nn.Identity(),  # evaluation: no dropped paths
             to_2tuple=lambda x: x if isinstance(x, tuple) else (x, x),
             trunc_normal_=lambda tensor, std=1.0: nn.init.trunc_normal_(tensor, std=std))
    stand_in("timm.models.registry", register_model=lambda fn: fn)
    stand_in("einops", rearrange=None)
    stand_in("flash_attn.modules.mlp", FusedMLP=None)
    stand_in("flash_attn.ops.rms_norm", DropoutAddRMSNorm=None)
    # Its package imports every model of the folder: load the two files it needs as one package.
    package = types.ModuleType("authors_models")
    package.__path__ = [str(models)]
    sys.modules["authors_models"] = package
    stand_in("authors_models.flash_attention_class", FlashAttention=None)
    with contextlib.redirect_stdout(io.StringIO()):
        from authors_models.internvideo2 import InternVideo2
    return InternVideo2


def compare(authors_class, name, folder):
    width, depth, heads, ratio, pixels, preset_name = MODELS[name]
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its settings
        theirs = authors_class(img_size=pixels, patch_size=14, embed_dim=width, depth=depth, num_heads=heads,
                               mlp_ratio=ratio, num_frames=FRAMES, tubelet_size=1, use_flash_attn=False,
                               use_fused_rmsnorm=False, use_fused_mlp=False, num_classes=400).eval()
    with torch.no_grad():
        for key, value in theirs.named_parameters():
            if key.endswith("gamma"):
                value.uniform_(0.5, 1.5)
            elif "norm" in key and key.endswith("weight"):
                value.normal_(1.0, 0.1)
            elif key.endswith("bias") or key in ("pos_embed", "cls_token"):
                value.normal_(0.0, 0.02)
    path = Path(folder) / f"{name}.pth"
    torch.save({"model": theirs.state_dict()}, path)
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
        theirs(parts.normalized(clips, ours.pixel_mean, ours.pixel_std))
        theirs_s = time.perf_counter() - start
        start = time.perf_counter()
        mine = ours(clips, list(range(1, depth + 1)))
        ours_s = time.perf_counter() - start
    gaps = []
    for index, (their, own) in enumerate(zip(taps, mine), 1):
        their = their[:, 1:].reshape(own.shape)  # the patch tokens, behind the class token
        gap = (their - own).abs().max().item()
        gaps.append((gap / their.abs().max().item(), gap, index))
    relative, gap, block = max(gaps)
    return {"model": name, "width": width, "blocks": depth, "heads": heads, "clips": f"2 x {FRAMES} x {pixels} px",
            "variant read": loaded["variant"], "keys ignored": len(loaded["ignored"]),
            "worst block": block, "max abs diff": f"{gap:.2g}", "relative to max token": f"{relative:.2g}",
            "block 1 abs diff": f"{gaps[0][1]:.2g}", "authors' forward s": f"{theirs_s:.1f}",
            "actloc's forward s": f"{ours_s:.1f}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of OpenGVLab/InternVideo")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    authors_class = authors_model_class(args.reference)
    with tempfile.TemporaryDirectory() as folder:
        rows = [compare(authors_class, name, folder) for name in args.models]
    report("internvideo2_reference", "InternVideo2: actloc's blocks beside the authors' code, same weights (CPU, fp32)",
           rows)


if __name__ == "__main__":
    main()
