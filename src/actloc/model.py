"""A method = the features it builds from the cache + the shared detection head.

head_only reads the last tapped layer; losa reads every tapped layer and its temporal tokens
and adds adapters. Inputs are first standardised per layer and channel with statistics of the
training set (frozen-backbone activations can carry a large constant part that hides how they
change over time). Both methods normalise their features with a LayerNorm before the head, so
an untrained losa equals head_only.
"""

import torch
from torch import nn

from .head import Head, HeadConfig
from .io import InputError, atomic_path
from .losa import LoSA, LosaConfig

METHODS = ("head_only", "losa")


class LastLayer(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, pooled, temporal, mask):
        return self.norm(pooled[:, -1])


class Detector(nn.Module):
    def __init__(self, method, channels, layers, classes, head=HeadConfig(), losa=LosaConfig()):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
        self.method = method
        # The head is built first so that, from one seed, both methods get the same head.
        self.head = Head(channels, classes, head)
        self.features = LastLayer(channels) if method == "head_only" else LoSA(channels, layers, losa)
        read = 1 if method == "head_only" else layers
        for name in ("pooled", "temporal"):
            self.register_buffer(f"{name}_mean", torch.zeros(read, channels))
            self.register_buffer(f"{name}_std", torch.ones(read, channels))

    @property
    def reads(self):
        """What this method reads from a store: (layers for Cache.read, temporal tokens?)."""
        return ("last", False) if self.method == "head_only" else (None, True)

    def standardise(self, name, x):
        """(x - mean) / std per layer and channel; x is (B, L, T, [t,] C)."""
        shape = (1, -1) + (1,) * (x.ndim - 3) + (x.shape[-1],)
        return (x - getattr(self, f"{name}_mean").view(shape)).div_(getattr(self, f"{name}_std").view(shape))

    @torch.no_grad()
    def fit_standardisation(self, reads):
        """Set the statistics from an iterable of Cache.read outputs (whole videos), streamed:
        only running sums are kept, never the activations of every video at once."""
        sums = {}
        for read in reads:
            for name, x in read.items():
                x = x.flatten(1, -2).double()  # (L, n, C)
                count, total, squares = sums.get(name, (0, 0.0, 0.0))
                sums[name] = (count + x.shape[1], total + x.sum(1), squares + (x * x).sum(1))
        for name, (count, total, squares) in sums.items():
            mean = total / count
            variance = (squares / count - mean**2).clamp(min=0) * count / max(count - 1, 1)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(variance.sqrt().clamp(min=1e-6))

    def forward(self, batch):
        temporal = batch["temporal"]
        temporal = None if temporal is None else self.standardise("temporal", temporal)
        x = self.features(self.standardise("pooled", batch["pooled"]), temporal, batch["mask"])
        return self.head(x.transpose(1, 2), batch["mask"])


def configs(settings):
    """HeadConfig and LosaConfig from a method's settings (plain dicts, e.g. from config.yaml)."""
    head = dict(settings.get("head", {}))
    if "regression_ranges" in head:
        head["regression_ranges"] = tuple(tuple(r) for r in head["regression_ranges"])
    return HeadConfig(**head), LosaConfig(**settings.get("losa", {}))


def build(settings, channels, layers, classes):
    head, losa = configs(settings)
    return Detector(settings["method"], channels, layers, classes, head, losa)


def trainable_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save(path, model, settings, classes, store_attrs, summary):
    """model.pt: the weights and everything needed to rebuild the model and read its inputs."""
    payload = {"settings": settings, "classes": list(classes), "store": store_attrs, "summary": summary,
               "state": model.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path, device="cpu"):
    """(model in eval mode, the saved payload) from a model.pt."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        attrs = payload["store"]
        model = build(payload["settings"], attrs["channels"], len(attrs["layers"]), len(payload["classes"]))
        model.load_state_dict(payload["state"])
    except Exception as err:  # torch.load raises many types for a file that is not its own
        raise InputError(f"{path}: not a model written by actloc train ({err})") from None
    return model.to(device).eval(), payload

