"""A detector = a method's features (actloc.methods) built from the cache + the shared head.

Inputs are first standardised per layer and channel with statistics of the
training set (frozen-backbone activations can carry a large constant part that hides how they
change over time). Methods end their features with a LayerNorm, so that an untrained losa equals head_only.
"""

import torch
from torch import nn

from ..io import InputError, atomic_path, first_line, load_weights
from ..settings import HeadConfig, head_config
from ..store import stores
from . import get, own_settings
from .head import Head


class Detector(nn.Module):
    def __init__(self, method, channels, n_layers, classes, head=HeadConfig(), settings=None, store=None):
        """`method`: its name (see actloc.methods.get); `settings`: its own settings dataclass;
        `store`: the cache's attributes (a method reading block tokens needs them)."""
        super().__init__()
        spec = get(method)
        self.method, self.layers, self.temporal, self.tokens = method, spec.layers, spec.temporal, spec.tokens
        # The head is built first so that, from one seed, every method gets the same head.
        self.head = Head(channels, classes, head)
        # A method that reads block tokens builds the blocks above them from the store's attributes.
        self.features = (spec.features(channels, n_layers, settings, store) if spec.tokens
                         else spec.features(channels, n_layers, settings))
        read = 1 if spec.layers == "last" else n_layers
        for name in ("pooled", "temporal"):
            self.register_buffer(f"{name}_mean", torch.zeros(read, channels))
            self.register_buffer(f"{name}_std", torch.ones(read, channels))

    @property
    def reads(self):
        """What this method reads from a store: Cache.read's layers, temporal and tokens."""
        return {"layers": "last" if self.layers == "last" else None, "temporal": self.temporal,
                "tokens": self.tokens}

    def standardise(self, name, x):
        """(x - mean) / std per layer and channel; x is (B, L, T, [t,] C)."""
        shape = (1, -1) + (1,) * (x.ndim - 3) + (x.shape[-1],)
        return (x - getattr(self, f"{name}_mean").view(shape)).div_(getattr(self, f"{name}_std").view(shape))

    @torch.no_grad()
    def set_standardisation(self, parts):
        """Set the statistics from an iterable of moments ({name: (count, sum, sum of squares)},
        see store.stores.moments): of stores as recorded, or of reads."""
        totals = {}
        for part in parts:
            for name, value in part.items():
                totals[name] = stores.combine([totals[name], value]) if name in totals else value
        for name, (count, total, squares) in totals.items():
            mean = total / count
            variance = (squares / count - mean**2).clamp(min=0) * count / max(count - 1, 1)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(variance.sqrt().clamp(min=1e-6))

    def fit_standardisation(self, reads):
        """Set the statistics from an iterable of Cache.read outputs, streamed: only running
        sums are kept, never the activations of every read at once."""
        self.set_standardisation({name: stores.moments(x) for name, x in read.items()} for read in reads)

    def inputs(self, batch):
        """The features' inputs before standardisation, float32: the cached taps (float16 as
        stored, converted where the batch is), those above the block tokens recomputed from
        them by a method that reads them."""
        pooled, temporal = batch["pooled"].float(), batch["temporal"]
        temporal = None if temporal is None else temporal.float()
        if not self.tokens:
            return pooled, temporal
        return self.features.upper_taps(pooled, temporal, batch["block_tokens"].float(), batch["mask"])

    @torch.no_grad()
    def read_inputs(self, read):
        """`inputs` of one store read ({name: (L, T, ...)}), on the CPU: what the standardisation
        is fitted on where it cannot come from the stores' moments."""
        device = self.pooled_mean.device
        batch = {"temporal": None, "block_tokens": None} | {name: x[None].to(device) for name, x in read.items()}
        batch["mask"] = torch.ones(1, read["pooled"].shape[1], dtype=torch.bool, device=device)
        pooled, temporal = self.inputs(batch)
        return {"pooled": pooled[0].cpu()} | ({"temporal": temporal[0].cpu()} if temporal is not None else {})

    def forward(self, batch):
        pooled, temporal = self.inputs(batch)
        temporal = None if temporal is None else self.standardise("temporal", temporal)
        x = self.features(self.standardise("pooled", pooled), temporal, batch["mask"])
        return self.head(x.transpose(1, 2), batch["mask"])


def build(settings, store, classes):
    """The detector of a method's settings (plain dicts, as written by settings.full_settings)
    for a cache with the attributes `store`."""
    return Detector(settings["method"], store["channels"], len(store["layers"]), classes,
                    head_config(settings.get("head", {})), own_settings(get(settings["method"]), settings), store)


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
        model = build(payload["settings"], payload["store"], len(payload["classes"]))
        model.load_state_dict(payload["state"])
    except Exception as err:  # a checkpoint of something else lacks keys or has other shapes
        raise InputError(f"{path}: not a model written by actloc train ({first_line(err)})") from None
    return model.to(device).eval(), payload

