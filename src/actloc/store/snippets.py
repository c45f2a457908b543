"""The snippet protocol: snippet i covers frames [i * stride, i * stride + frames) of the decoded
video and is centred at (i * stride + frames / 2) / fps seconds (docs/design.md, "Snippets");
the last one is padded by repeating the last frame."""

import math

import numpy as np


def check_protocol(frames, stride, tubelet=1):
    """ValueError unless snippets of `frames` frames (a multiple of the backbone's `tubelet`)
    start every `stride` frames, 1 <= stride <= frames: a larger stride would skip frames."""
    if frames < tubelet or frames % tubelet:
        raise ValueError(f"snippet frames must be a multiple of the backbone's tubelet ({tubelet} frames), "
                         f"got {frames}")
    if not 1 <= stride <= frames:
        raise ValueError(f"stride must be within 1..{frames} (the snippet frames): a larger one would skip "
                         f"frames, got {stride}")


def snippet_count(frames, length, stride):
    """Snippets from frame 0 every `stride` frames until one reaches the last frame."""
    return 1 + max(0, math.ceil((frames - length) / stride)) if frames > 0 else 0


def _stack(frames, count, length, stride):
    index = np.arange(count)[:, None] * stride + np.arange(length)
    return np.stack(frames[:(count - 1) * stride + length])[index]


def snippet_batches(frames, length, stride, batch):
    """Group a stream of frames into uint8 arrays (n <= batch, length, H, W, 3) of consecutive
    snippets, the last snippet padded with the last frame. Holds one batch of frames at a time."""
    check_protocol(length, stride)
    need = (batch - 1) * stride + length  # frames that `batch` consecutive snippets span
    buffer, read, emitted = [], 0, 0
    for frame in frames:
        buffer.append(frame)
        read += 1
        if len(buffer) == need:
            yield _stack(buffer, batch, length, stride)
            emitted += batch
            del buffer[:batch * stride]
    remaining = snippet_count(read, length, stride) - emitted
    while remaining > 0:
        count = min(remaining, batch)
        span = (count - 1) * stride + length
        yield _stack(buffer + buffer[-1:] * (span - len(buffer)), count, length, stride)
        del buffer[:count * stride]
        remaining -= count


def resampled(x, length):
    """x (L, T, ...) linearly interpolated along T to `length` steps (align_corners=False: step j
    of the result sits at snippet (j + 0.5) T / length - 0.5, see to_grid)."""
    import torch.nn.functional as F

    moved = x.movedim(1, -1)
    out = F.interpolate(moved.reshape(-1, 1, x.shape[1]), size=length, mode="linear", align_corners=False)
    return out.reshape(*moved.shape[:-1], length).movedim(-1, 1)


def to_grid(steps, snippets, length):
    """Snippet steps of a video of `snippets` as steps of its `length`-step resampling."""
    return (steps + 0.5) * length / snippets - 0.5


def from_grid(steps, snippets, length):
    """The inverse of to_grid: steps of the resampling back to snippet steps."""
    return (steps + 0.5) * snippets / length - 0.5


def seconds_to_steps(seconds, attrs):
    return (seconds * attrs["fps"] - attrs["snippet_frames"] / 2) / attrs["stride"]


def steps_to_seconds(steps, attrs):
    return (steps * attrs["stride"] + attrs["snippet_frames"] / 2) / attrs["fps"]
