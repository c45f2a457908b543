"""Frozen video backbones: the VideoMAE / VideoMAEv2 family (presets without torch, the model in videomae)."""
