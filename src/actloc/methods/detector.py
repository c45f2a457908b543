"""A detector = a method's features (actloc.methods) built from the cache + the shared head.

Inputs are first standardised per layer and channel with statistics of the
training set (frozen-backbone activations can carry a large constant part that hides how they
change over time). Methods end their features with a LayerNorm, so that an untrained losa equals head_only.
"""

import torch
from torch import nn

from ..io import InputError, atomic_path, first_line, load_weights
from ..settings import HeadConfig, head_config, method_config
from . import get
from .head import Head


class Detector(nn.Module):
    def __init__(self, method, channels, n_layers, classes, head=HeadConfig(), settings=None):
        """`method`: its name (see actloc.methods.get); `settings`: its own settings dataclass."""
        super().__init__()
        spec = get(method)
        self.method, self.layers, self.temporal = method, spec.layers, spec.temporal
        # The head is built first so that, from one seed, every method gets the same head.
        self.head = Head(channels, classes, head)
        self.features = spec.features(channels, n_layers, settings)
        read = 1 if spec.layers == "last" else n_layers
        for name in ("pooled", "temporal"):
            self.register_buffer(f"{name}_mean", torch.zeros(read, channels))
            self.register_buffer(f"{name}_std", torch.ones(read, channels))

    @property
    def reads(self):
        """What this method reads from a store: (layers for Cache.read, temporal tokens?)."""
        return ("last" if self.layers == "last" else None), self.temporal

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


def build(settings, channels, n_layers, classes):
    """The detector of a method's settings (plain dicts, as written by settings.full_settings)."""
    return Detector(settings["method"], channels, n_layers, classes, head_config(settings.get("head", {})),
                    method_config(settings))


def save(path, model, settings, classes, store_attrs, summary):
    """model.pt: the weights and everything needed to rebuild the model and read its inputs."""
    payload = {"settings": settings, "classes": list(classes), "store": store_attrs, "summary": summary,
               "state": model.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path, device="cpu"):
    """(model in eval mode, the saved payload) from a model.pt."""
    payload = load_weights(path)
    try:
        attrs = payload["store"]
        model = build(payload["settings"], attrs["channels"], len(attrs["layers"]), len(payload["classes"]))
        model.load_state_dict(payload["state"])
    except Exception as err:  # a checkpoint of something else lacks keys or has other shapes
        raise InputError(f"{path}: not a model written by actloc train ({first_line(err)})") from None
    return model.to(device).eval(), payload

