"""LoSA: long-short-range adapters over cached backbone activations (docs/design.md#losa).

Inputs per video are the cached tapped layers: `pooled` (B, L, T, C) and `temporal`
(B, L, T, t, C), with a mask (B, T) of real snippets. They are constants (the cache), so no
gradient can reach the backbone. At each tapped layer l, in order, a running state s gives
x = pooled_l + s; a short-range adapter lets every snippet attend to its neighbours' temporal
tokens and a long-range adapter lets it attend to every snippet of the video; then
s = x + short + long. The features handed to the head are

    LayerNorm(pooled_last + sum_l tanh(alpha_l) * short_l + tanh(beta_l) * long_l)

with per-channel gates alpha, beta starting at zero, so an untrained LoSA is exactly head_only.
The adapters' own weights start random: were their up-projections zero too, every gradient
would be a product of two zeros and nothing would ever train.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import LosaConfig
from . import Method
from .head import banded_attention

QUERY_CHUNK = 8  # short-range queries a batched matmul takes together


class ShortRange(nn.Module):
    """Each snippet (query) cross-attends to the temporal tokens of snippets within +-window."""

    def __init__(self, channels, width, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm_query, self.norm_tokens = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.query = nn.Linear(channels, width)
        self.key_value = nn.Linear(channels, 2 * width)
        self.up = nn.Linear(width, channels)

    def forward(self, x, tokens, mask):
        length, count = tokens.shape[1:3]
        w, chunk = self.window, QUERY_CHUNK
        chunks = -(-length // chunk)
        pad = chunks * chunk - length
        q = self.query(self.norm_query(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, T, e)
        q = F.pad(q, (0, 0, 0, pad)).unflatten(2, (chunks, chunk))  # (B, H, n, c, e)
        kv = self.key_value(self.norm_tokens(tokens)).unflatten(-1, (2, self.heads, -1))  # (B, T, t, 2, H, e)
        kv = F.pad(kv.permute(3, 0, 4, 1, 2, 5), (0, 0, 0, 0, w, pad + w))  # (2, B, H, T + 2w + pad, t, e)
        # Queries go by chunks of c snippets, each against the tokens of the c + 2w snippets the
        # chunk can see: batched matmuls over (c + 2w) / c copies of k and v (1.5 at c = 8, w = 2),
        # where gathering each snippet's own neighbours would copy them 2w + 1 times.
        k, v = kv.unfold(3, chunk + 2 * w, chunk).permute(0, 1, 2, 3, 6, 4, 5).flatten(4, 5)  # (B, H, n, (c+2w) t, e)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, n, c, (c + 2w) t)
        offset = torch.arange(chunk + 2 * w, device=x.device) - torch.arange(chunk, device=x.device)[:, None]
        real = F.pad(mask, (w, pad + w)).unfold(1, chunk + 2 * w, chunk)  # (B, n, c + 2w)
        visible = (offset >= 0) & (offset <= 2 * w) & real[:, None, :, None]  # (B, 1, n, c, c + 2w): within +-w
        scores = scores.masked_fill(~visible.repeat_interleave(count, -1), torch.finfo(scores.dtype).min)
        out = (scores.softmax(-1) @ v).flatten(2, 3)[:, :, :length]  # (B, H, T, e)
        return self.up(out.transpose(1, 2).flatten(-2))


class LongRange(nn.Module):
    """Bottleneck self-attention over every snippet of the video (or a +-window band)."""

    def __init__(self, channels, width, heads, window=None):
        super().__init__()
        self.heads, self.window = heads, window
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * width)
        self.up = nn.Linear(width, channels)

    def forward(self, x, mask):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if self.window is not None:
            out = banded_attention(q, k, v, mask, self.window)
        else:  # with no more than a key-padding mask SDPA's fused kernels never hold T x T weights
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bool(mask.all()) else mask[:, None, None])
        return self.up(out.transpose(1, 2).flatten(-2))  # (B, T, C)


class LoSA(nn.Module):
    NO_DECAY = ("alpha", "beta")  # the gates: 2-D (a row per layer), but gates all the same

    def __init__(self, channels, n_layers, config=LosaConfig()):
        super().__init__()
        width = config.adapter_width(channels)
        self.short = nn.ModuleList(ShortRange(channels, width, config.heads, config.short_window)
                                   for _ in range(n_layers))
        self.long = nn.ModuleList(LongRange(channels, width, config.heads, config.long_window)
                                  for _ in range(n_layers))
        self.alpha = nn.Parameter(torch.zeros(n_layers, channels))
        self.beta = nn.Parameter(torch.zeros(n_layers, channels))
        self.norm = nn.LayerNorm(channels)

    def forward(self, pooled, temporal, mask):
        """(B, T, C) features for the head from pooled (B, L, T, C) and temporal (B, L, T, t, C)."""
        if temporal is None:
            raise ValueError("losa needs the cache's temporal tokens (backbone temporal: true)")
        keep = mask[..., None].to(pooled.dtype)
        state, fused = torch.zeros_like(pooled[:, 0]), pooled[:, -1]
        for layer, (short, long) in enumerate(zip(self.short, self.long)):
            x = pooled[:, layer] + state
            s, g = short(x, temporal[:, layer], mask) * keep, long(x, mask) * keep
            state = x + s + g
            fused = fused + self.alpha[layer].tanh() * s + self.beta[layer].tanh() * g
        return self.norm(fused)


METHOD = Method("losa", layers="all", temporal=True, settings=LosaConfig,
                features=lambda channels, n_layers, settings: LoSA(channels, n_layers, settings or LosaConfig()))
