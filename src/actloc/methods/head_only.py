"""head_only, the standard baseline: the head on the last tapped layer's pooled features."""

from torch import nn

from . import Method


class LastLayer(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, pooled, temporal, mask):
        return self.norm(pooled[:, -1])


METHOD = Method("head_only", layers="last", temporal=False,
                features=lambda channels, n_layers, settings: LastLayer(channels))
