"""Every setting of a method and its training, with its default: the one place defaults live.

config.yaml's `head`, `losa`, `lofi` and `train` entries become these dataclasses (unknown keys
and bad values are errors when Snakemake parses the config: see actloc.config). No torch here:
the Snakefile imports this module.
"""

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # cosine epochs, after the warm-up ones
    warmup_epochs: int = 5
    batch: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    clip: float = 1.0
    ema: float = 0.999
    max_length: int = 2304  # training windows, in snippets
    keep_fraction: float = 0.5  # a window keeps at least this much of some action
    seed: int = 0
    memory_mb: float = 4096  # cached activations kept in memory between epochs (data.KeptReads)
    read_ahead: int = 2  # batches read and padded in the background while a step runs
    # "bf16" (autocast; weights, optimiser and EMA stay float32) or "fp32"; None: bf16 on CUDA for
    # a method that runs backbone blocks (partial), else fp32
    precision: str | None = None
    fixed_steps: int | None = None  # every video's features resampled to this length (ActivityNet's 192)
    actionness: bool = False  # one class for every action: labels come from a video-level classifier

    def __post_init__(self):
        at_least = {"epochs": 1, "warmup_epochs": 0, "batch": 1, "max_length": 1, "weight_decay": 0, "memory_mb": 0,
                    "read_ahead": 0}
        if self.fixed_steps is not None:
            at_least["fixed_steps"] = 1
        for name, low in at_least.items():
            if not getattr(self, name) >= low:
                raise ValueError(f"train: {name} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train: {name} must be positive, got {getattr(self, name)}")
        if self.precision not in (None, "bf16", "fp32"):
            raise ValueError(f"train: precision must be bf16 or fp32, got {self.precision!r}")
        if not (0 <= self.ema <= 1 and 0 < self.keep_fraction <= 1):
            raise ValueError(f"train: ema must be within [0, 1] and keep_fraction within (0, 1], got {self.ema} "
                             f"and {self.keep_fraction}")


@dataclass(frozen=True)
class HeadConfig:
    width: int = 512
    stem_blocks: int = 2
    levels: int = 6  # the stem's level plus one per downsampling block
    window: int = 19  # local attention span, in steps of the level
    heads: int = 4
    head_layers: int = 2  # conv layers before each head's output conv
    regression_ranges: tuple = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))
    center_radius: float = 1.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior: float = 0.01
    loss_momentum: float = 0.9  # EMA of the positive count that normalises the losses
    loss_norm_init: float = 100.0
    # inference
    score_threshold: float = 0.001
    top_k: int = 2000  # candidates per level
    min_duration: float = 0.05  # in snippets
    nms: str = "soft"  # soft (Gaussian) or hard, per class
    sigma: float = 0.5
    iou_threshold: float = 0.1  # hard NMS only
    max_segments: int = 200
    voting: float = 0.0  # box voting at this tIoU after NMS (0: off; ActionFormer's ActivityNet: 0.9)

    def __post_init__(self):
        if len(self.regression_ranges) != self.levels:
            raise ValueError(f"head: {self.levels} levels need as many regression ranges, "
                             f"got {len(self.regression_ranges)}")
        if self.window % 2 == 0:
            raise ValueError(f"head: window must be odd (centred on each step), got {self.window}")


@dataclass(frozen=True)
class LosaConfig:
    reduction: int = 4  # adapter width = channels // reduction
    heads: int = 8
    short_window: int = 2  # the short-range adapter sees snippets i-w .. i+w
    long_window: int | None = None  # None: the whole video; else only snippets within +-window

    def __post_init__(self):
        for name in ("reduction", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"losa: {name} must be at least 1, got {getattr(self, name)}")
        if self.short_window < 0 or (self.long_window is not None and self.long_window < 1):
            raise ValueError(f"losa: windows must be short_window >= 0 and long_window >= 1 (or null), got "
                             f"{self.short_window} and {self.long_window}")

    def adapter_width(self, channels):
        """The adapters' width for features of `channels`; ValueError when the heads do not divide it."""
        width = channels // self.reduction
        if width < self.heads or width % self.heads:
            raise ValueError(f"losa: adapter width {width} (channels {channels} / reduction {self.reduction}) "
                             f"is not a multiple of heads {self.heads}")
        return width


# Fidelity: (keep every n-th snippet, side factor).
MODES = {"S": (1, 0.5), "T": (4, 1.0), "ST": (2, 1 / math.sqrt(2))}
CYCLE = ("S", "T", "ST")
FIDELITIES = (*MODES, "cyclic", "short-cyclic")


@dataclass(frozen=True)
class LofiConfig:
    fidelity: str = "cyclic"
    switch_every: int = 16  # short-cyclic: steps between switches
    trainable_blocks: int | None = None  # the top blocks that train; None: the whole backbone
    budget_mb: float = 40_000  # weights, optimiser state and activations of one step
    checkpointing: bool = True
    backbone_lr: float = 0.1  # the backbone's learning rate, as a fraction of the head's
    frame_memory_mb: float = 2_048  # decoded frames kept in memory from one epoch to the next
    snippet_frames: int = 16
    stride: int = 4

    def __post_init__(self):
        if self.fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITIES)}, got {self.fidelity!r}")
        if self.trainable_blocks is not None and self.trainable_blocks < 1:
            raise ValueError(f"trainable_blocks must be at least 1 (or null for the whole backbone), "
                             f"got {self.trainable_blocks}")
        if self.switch_every < 1:
            raise ValueError(f"switch_every must be at least 1, got {self.switch_every}")


@dataclass(frozen=True)
class PartialConfig:
    adapter_reduction: int = 4  # the in-block adapters' bottleneck: block width / reduction
    kernel: int = 3  # their depthwise convolution over tubelet steps
    tune_blocks: int = 0  # the top blocks tuned in full, besides the adapters (and then the final norm)
    checkpointing: bool = True  # keep each upper block's input only, recompute the rest in backward
    budget_mb: float = 40_000  # weights, optimiser state and activations of one step
    losa: dict = field(default_factory=dict)  # LoSA on the tapped layers (LosaConfig's settings)

    def __post_init__(self):
        if self.adapter_reduction < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"partial: adapter_reduction must be at least 1 and kernel odd, got "
                             f"{self.adapter_reduction} and {self.kernel}")
        if self.tune_blocks < 0:
            raise ValueError(f"partial: tune_blocks must be at least 0, got {self.tune_blocks}")
        LosaConfig(**self.losa)


def head_config(entry):
    """HeadConfig from a `head` entry (JSON gives regression ranges as lists)."""
    entry = dict(entry)
    if "regression_ranges" in entry:
        entry["regression_ranges"] = tuple(tuple(r) for r in entry["regression_ranges"])
    return HeadConfig(**entry)
