"""ActionFormer-style detection head over a sequence of snippet features (docs/design.md#head).

Tensors are (B, C, T) around convolutions and (B, T, C) in the transformer blocks, with a boolean
mask (B, T) of real snippets, passed as (x, mask) pairs. Two masked convs project the input; a
stem of local-window transformer blocks follows, then blocks that each halve the length,
giving a pyramid of levels with strides 1, 2, 4, ... Classification and regression heads are
shared by all levels. Every point t of level l sits at snippet t * 2**l; it predicts class
scores and its distances to the action's start and end in units of its stride.

Positions and segments are in snippet (feature step) units here; store.snippets converts to seconds.
"""

import math
import torch
import torch.nn.functional as F
from torch import nn

from ..settings import HeadConfig
from . import nms


def channel_norm(norm, x):
    """LayerNorm over the channels of a (B, C, T) tensor."""
    return norm(x.transpose(1, 2)).transpose(1, 2)


def banded_attention(q, k, v, mask, reach, block=None):
    """Attention of each step to the real steps within `reach` of it: (B, H, T, d) in and out,
    `mask` (B, T) of real steps or None. Queries go by blocks, each against only the keys its
    band can reach, through SDPA's fused kernels: time and memory grow with T, never T * T.
    A padded query that sees no real key gets zeros; its output is masked later anyway."""
    length, block = q.shape[2], block or max(64, 2 * reach)
    steps = torch.arange(length, device=q.device)
    out = []
    for start in range(0, length, block):
        stop = min(start + block, length)
        low, high = max(start - reach, 0), min(stop + reach, length)
        allowed = (steps[start:stop, None] - steps[None, low:high]).abs() <= reach
        if mask is not None:
            allowed = allowed & mask[:, None, None, low:high]
        out.append(F.scaled_dot_product_attention(q[:, :, start:stop], k[:, :, low:high], v[:, :, low:high],
                                                  attn_mask=allowed))
    return torch.cat(out, 2)


class LocalAttention(nn.Module):
    def __init__(self, width, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, mask):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = banded_attention(q, k, v, mask, self.window // 2)  # (B, H, T, d)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm transformer block with local attention over (B, T, C); `downsample` halves the
    length first. Its 1x1 projections are Linear layers on this layout: no transposes around
    the norms, and on a CPU a faster path than 1x1 Conv1d (the demo's head step ~12 % faster)."""

    def __init__(self, width, heads, window, downsample=False):
        super().__init__()
        self.downsample = downsample
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = LocalAttention(width, heads, window)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, mask):
        if self.downsample:
            x, mask = F.max_pool1d(x.transpose(1, 2), 3, stride=2, padding=1).transpose(1, 2), mask[:, ::2]
        keep = mask[..., None].to(x.dtype)
        x = x * keep
        x = x + self.attn(self.norm1(x), mask) * keep
        x = x + self.mlp(self.norm2(x)) * keep
        return x, mask


class ConvHead(nn.Module):
    """Shared over levels: `layers` x (conv k3, LayerNorm, ReLU), then a conv to `outputs`."""

    def __init__(self, width, outputs, layers):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(width, width, 3, padding=1) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.out = nn.Conv1d(width, outputs, 3, padding=1)

    def forward(self, x, mask):
        keep = mask[:, None].to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(channel_norm(norm, conv(x) * keep))
        return self.out(x) * keep


class Head(nn.Module):
    def __init__(self, channels, classes, config=HeadConfig()):
        super().__init__()
        self.config, self.classes = config, classes
        w = config.width
        self.embed = nn.ModuleList([nn.Conv1d(channels, w, 3, padding=1), nn.Conv1d(w, w, 3, padding=1)])
        self.blocks = nn.ModuleList(
            [Block(w, config.heads, config.window) for _ in range(config.stem_blocks)]
            + [Block(w, config.heads, config.window, downsample=True) for _ in range(config.levels - 1)])
        self.level_norms = nn.ModuleList(nn.LayerNorm(w) for _ in range(config.levels))
        self.cls_head = ConvHead(w, classes, config.head_layers)
        self.reg_head = ConvHead(w, 2, config.head_layers)
        self.reg_scales = nn.Parameter(torch.ones(config.levels))
        nn.init.constant_(self.cls_head.out.bias, -math.log((1 - config.prior) / config.prior))
        self.register_buffer("loss_norm", torch.tensor(config.loss_norm_init))

    @property
    def max_stride(self):
        return 2 ** (self.config.levels - 1)

    def forward(self, x, mask):
        """Per level: class logits (B, T_l, K), offsets (B, T_l, 2) in units of the level's
        stride, and the level's mask (B, T_l). T must be a multiple of `max_stride`."""
        if x.shape[-1] % self.max_stride:
            raise ValueError(f"sequence length {x.shape[-1]} is not a multiple of {self.max_stride}")
        keep = mask[:, None].to(x.dtype)
        x = x * keep  # whatever padding holds, convolutions must see zeros there
        for conv in self.embed:
            x = F.relu(conv(x) * keep)
        x, levels = x.transpose(1, 2), []
        for i, block in enumerate(self.blocks):
            x, mask = block(x, mask)
            if i >= self.config.stem_blocks - 1:
                levels.append((self.level_norms[len(levels)](x).transpose(1, 2), mask))
        logits, offsets, masks = [], [], []
        for level, (feat, m) in enumerate(levels):
            logits.append(self.cls_head(feat, m).transpose(1, 2))
            offsets.append(F.relu(self.reg_scales[level] * self.reg_head(feat, m)).transpose(1, 2))
            masks.append(m)
        return logits, offsets, masks

    def points(self, length, device):
        """Every level's points as rows (position, range low, range high, stride), for an input
        of `length` steps."""
        rows = []
        for level, (low, high) in enumerate(self.config.regression_ranges):
            stride = 2 ** level
            position = torch.arange(0, length, stride, device=device, dtype=torch.float32)
            rows.append(torch.stack([position, *(torch.full_like(position, v) for v in (low, high, stride))], 1))
        return torch.cat(rows)

    def assign(self, points, segments, labels):
        """Targets of one video: class (P, K) in {0, 1} and offsets (P, 2) in stride units.

        A point is positive for an action when it lies within center_radius strides of the
        action's centre (and inside the action), and the farther of its two distances falls in
        its level's regression range. Of several such actions it takes the shortest (all of
        them, for classes, when equally short).
        """
        n = len(points)
        if len(segments) == 0:
            return torch.zeros(n, self.classes, device=points.device), torch.zeros(n, 2, device=points.device)
        position, low, high, stride = points.unbind(1)
        start, end = segments[:, 0], segments[:, 1]
        offsets = torch.stack([position[:, None] - start, end - position[:, None]], -1)  # (P, G, 2)
        centre = (start + end) / 2
        radius = self.config.center_radius * stride[:, None]
        near_centre = ((position[:, None] - torch.maximum(centre - radius, start) > 0)
                       & (torch.minimum(centre + radius, end) - position[:, None] > 0))
        reach = offsets.max(-1).values
        in_range = (reach >= low[:, None]) & (reach <= high[:, None])
        lengths = (end - start)[None].expand(n, -1).masked_fill(~(near_centre & in_range), math.inf)
        shortest, index = lengths.min(1)
        chosen = (lengths <= shortest[:, None] + 1e-3) & torch.isfinite(lengths)
        onehot = F.one_hot(labels, self.classes).to(points.dtype)
        cls_target = (chosen.to(points.dtype) @ onehot).clamp(max=1)
        reg_target = offsets[torch.arange(n), index] / stride[:, None]
        return cls_target, reg_target

    def loss(self, outputs, targets, update_norm=True, total=None):
        """Focal + DIoU losses, both divided by an EMA of the positive count (updated when
        training). `targets` is a list per video of (segments (G, 2) in snippets, labels (G,));
        `total`: sums a count over the processes of a data-parallel training, whose windows
        together are the batch (engine.distributed.World.total)."""
        points = self.points(outputs[2][0].shape[1], outputs[0][0].device)  # level 0: the input's length
        logits, offsets, masks = (torch.cat(parts, 1) for parts in outputs)
        cls_targets, reg_targets = zip(*(self.assign(points, s, l) for s, l in targets))
        cls_targets, reg_targets = torch.stack(cls_targets), torch.stack(reg_targets)
        positive = (cls_targets.sum(-1) > 0) & masks
        if update_norm and self.training:
            self.update_norm(positive.sum(), total)
        cls_loss = sigmoid_focal_loss(logits[masks], cls_targets[masks], self.config.focal_alpha,
                                      self.config.focal_gamma).sum() / self.loss_norm
        reg_loss = diou_loss(offsets[positive], reg_targets[positive]).sum() / self.loss_norm
        return {"loss": cls_loss + reg_loss, "cls_loss": cls_loss, "reg_loss": reg_loss}

    def update_norm(self, positives, total=None):
        """One step of the positive count's EMA: `positives` of this process, summed by `total`."""
        positives = positives if total is None else total(positives)
        m = self.config.loss_momentum
        self.loss_norm.mul_(m).add_((1 - m) * max(int(positives), 1))

    def no_loss(self, total):
        """The losses of a data-parallel process without a window in a step (the epoch's last
        batch can have fewer than the processes): zeros, after adding its none to the count."""
        self.update_norm(torch.zeros((), dtype=torch.long, device=self.loss_norm.device), total)
        return dict.fromkeys(("loss", "cls_loss", "reg_loss"), self.loss_norm.new_zeros(()))

    @torch.no_grad()
    def detect(self, outputs, lengths):
        """Per video: (segments (N, 2) in snippets, scores (N,), labels (N,)) after per-class NMS,
        at most max_segments, best first. `lengths` are the videos' real snippet counts."""
        c = self.config
        logits, offsets, _ = outputs
        points = self.points(outputs[2][0].shape[1], logits[0].device)
        results = []
        for b, length in enumerate(lengths):
            segments, scores, labels, start = [], [], [], 0
            for level, (lg, off) in enumerate(zip(logits, offsets)):
                stride = 2 ** level
                level_points = points[start:start + lg.shape[1]]
                start += lg.shape[1]
                real = math.ceil(length / stride)
                prob = lg[b, :real].sigmoid().flatten()
                keep = torch.nonzero(prob > c.score_threshold).squeeze(1)
                keep = keep[prob[keep].topk(min(c.top_k, len(keep))).indices]
                point, label = keep // self.classes, keep % self.classes
                pos, o = level_points[point, 0], off[b, point] * stride
                seg = torch.stack([pos - o[:, 0], pos + o[:, 1]], 1)
                long_enough = seg[:, 1] - seg[:, 0] > c.min_duration
                segments.append(seg[long_enough])
                scores.append(prob[keep][long_enough])
                labels.append(label[long_enough])
            seg, score, label = (torch.cat(x).cpu().numpy() for x in (segments, scores, labels))
            results.append(nms.per_class(seg, score, label, c.nms, c.sigma, c.iou_threshold,
                                         c.score_threshold, c.max_segments, c.voting))
        return results


def sigmoid_focal_loss(logits, targets, alpha, gamma):
    """Elementwise focal loss (Lin et al. 2017) of sigmoid scores."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return weight * ce * (1 - p_true) ** gamma


def diou_loss(predicted, target, eps=1e-8):
    """1-D distance-IoU loss of (left, right) distances from the same points: (N,)."""
    inter = torch.minimum(predicted, target).sum(-1)
    union = predicted.sum(-1) + target.sum(-1) - inter
    enclosing = torch.maximum(predicted, target).sum(-1)
    # Centres relative to the point are (right - left) / 2.
    centre_gap = ((predicted[:, 1] - predicted[:, 0]) - (target[:, 1] - target[:, 0])) / 2
    return 1 - inter / union.clamp(min=eps) + (centre_gap / enclosing.clamp(min=eps)) ** 2
