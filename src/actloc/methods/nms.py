"""Per-class non-maximum suppression of 1-D segments, Gaussian soft or hard, in NumPy."""

import numpy as np


def iou_with(segment, others):
    """tIoU of one segment (2,) with each of `others` (N, 2)."""
    inter = np.clip(np.minimum(segment[1], others[:, 1]) - np.maximum(segment[0], others[:, 0]), 0, None)
    union = (segment[1] - segment[0]) + (others[:, 1] - others[:, 0]) - inter
    return inter / np.maximum(union, 1e-8)


def suppress(segments, scores, method="soft", sigma=0.5, iou_threshold=0.1, min_score=0.001, limit=None):
    """Indices and (decayed) scores of the kept segments of one class, best first.

    Soft: every remaining score is multiplied by exp(-iou**2 / sigma) with the pick (Bodla et
    al. 2017) and dropped below `min_score`. Hard: segments overlapping the pick by more than
    `iou_threshold` are dropped. Stops after `limit` picks.
    """
    scores = scores.astype(np.float64).copy()
    remaining = np.arange(len(scores))
    kept, kept_scores = [], []
    while len(remaining) and (limit is None or len(kept) < limit):
        best = int(np.argmax(scores[remaining]))
        pick = remaining[best]
        kept.append(pick)
        kept_scores.append(scores[pick])
        remaining = np.delete(remaining, best)
        iou = iou_with(segments[pick], segments[remaining])
        if method == "soft":
            scores[remaining] *= np.exp(-iou ** 2 / sigma)
            remaining = remaining[scores[remaining] >= min_score]
        else:
            remaining = remaining[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64), np.asarray(kept_scores)


def voted(kept, candidates, scores, threshold):
    """Each of the `kept` segments (K, 2) moved to the mean of the `candidates` (N, 2; itself
    among them) that overlap it by tIoU >= `threshold`, weighted by their `scores`: box voting,
    as ActionFormer refines its ActivityNet segments."""
    weights = np.stack([iou_with(segment, candidates) >= threshold for segment in kept]) * scores[None]
    return weights @ candidates / weights.sum(axis=1, keepdims=True)


def per_class(segments, scores, labels, method="soft", sigma=0.5, iou_threshold=0.1, min_score=0.001,
              max_segments=200, voting=0.0):
    """NMS within each class, then the best `max_segments` overall: (segments, scores, labels).
    `voting` > 0 refines each kept segment by the class's candidates overlapping it that much."""
    if method not in ("soft", "hard"):
        raise ValueError(f"nms must be soft or hard, got {method!r}")
    out_segments, out_scores, out_labels = [np.zeros((0, 2))], [np.zeros(0)], [np.zeros(0, np.int64)]
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        # A class never contributes more than max_segments to the final list: stop there.
        keep, kept_scores = suppress(segments[rows], scores[rows], method, sigma, iou_threshold, min_score,
                                     max_segments)
        kept = segments[rows[keep]]
        out_segments.append(voted(kept, segments[rows], scores[rows], voting) if voting > 0 and len(kept) else kept)
        out_scores.append(kept_scores)
        out_labels.append(np.full(len(keep), label, np.int64))
    segments, scores, labels = (np.concatenate(x) for x in (out_segments, out_scores, out_labels))
    order = np.argsort(-scores, kind="stable")[:max_segments]
    return segments[order], scores[order], labels[order]
