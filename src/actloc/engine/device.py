"""Where tensors live, how much memory they take, and how runs are made repeatable."""

import os
import resource

import torch

from ..io import InputError


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but this machine has no CUDA device")
    return device


def peak_memory_mb(device):
    """CUDA: the most memory tensors held; CPU: the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_deterministic(seed):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)


def saved_bytes(fn, module):
    """Bytes of the tensors autograd keeps for backward while `fn()` runs `module`, whose own
    parameters aside."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        kept = fn()  # noqa: F841 (alive until counted: no saved storage is freed and its address reused)
        parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
        return sum(size for ptr, size in storages.items() if ptr not in parameters)


def fixed_bytes(net):
    """Weights (the model's and the EMA's), and gradients and two AdamW moments of what trains."""
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    trainable = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    return 2 * weights + 3 * trainable
