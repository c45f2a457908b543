import math

import pytest
import torch
from actloc.methods.head import Head, banded_attention, diou_loss, sigmoid_focal_loss
from actloc.settings import HeadConfig


SMALL = HeadConfig(width=16, levels=3, window=5, heads=2, regression_ranges=((0, 4), (4, 8), (8, 10000)))


def test_focal_loss_matches_its_formula_and_vanishes_when_confidently_right():
    logits, targets = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack([
        0.25 * -torch.log(p[0]) * (1 - p[0]) ** 2,
        0.75 * -torch.log(1 - p[1]) * p[1] ** 2,
        0.75 * -torch.log(1 - p[2]) * p[2] ** 2,
    ])
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 0.25, 2.0), expected)
    assert sigmoid_focal_loss(torch.tensor([12.0]), torch.tensor([1.0]), 0.25, 2.0) < 1e-9


def test_diou_loss_by_hand():
    # Distances (left, right): predicted (1, 1), true (1, 3): IoU 2/4, centres 1 apart, enclosing 4.
    loss = diou_loss(torch.tensor([[1.0, 1.0], [2.0, 5.0]]), torch.tensor([[1.0, 3.0], [2.0, 5.0]]))
    torch.testing.assert_close(loss, torch.tensor([1 - 0.5 + (1 / 4) ** 2, 0.0]))


def level_points(head, targets, length, level):
    """Positions of the level's points that are positive, and their targets."""
    points = head.points(length, "cpu")
    cls, reg = targets
    rows = torch.nonzero((points[:, 3] == 2 ** level) & (cls.sum(1) > 0)).squeeze(1)
    return points[rows, 0].tolist(), cls[rows], reg[rows]


def test_assignment_by_centre_sampling_and_regression_ranges():
    head = Head(8, 3, HeadConfig(levels=3, regression_ranges=((0, 4), (4, 8), (8, 10000))))
    # An action over steps [10, 18]: centre 14, longest distance of a point 4..8.
    targets = head.assign(head.points(32, "cpu"), torch.tensor([[10.0, 18.0]]), torch.tensor([2]))
    positions, cls, reg = level_points(head, targets, 32, 0)
    assert positions == [14.0]  # within 1.5 of the centre, farther distance <= 4
    positions, cls, reg = level_points(head, targets, 32, 1)
    assert positions == [12.0, 14.0, 16.0]  # within 3 of the centre, farther distance in [4, 8]
    torch.testing.assert_close(reg, torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]))  # in strides of 2
    assert cls.tolist() == [[0, 0, 1]] * 3
    assert level_points(head, targets, 32, 2)[0] == []  # no point of stride 4 reaches 8 inside it


def test_a_point_in_two_actions_takes_the_shorter_and_equal_ones_share_it():
    head = Head(8, 3, HeadConfig(levels=1, regression_ranges=((0, 100),), center_radius=100))
    points = head.points(16, "cpu")
    cls, reg = head.assign(points, torch.tensor([[0.0, 12.0], [4.0, 8.0]]), torch.tensor([0, 1]))
    assert cls[6].tolist() == [0, 1, 0] and reg[6].tolist() == [2.0, 2.0]
    assert cls[10].tolist() == [1, 0, 0]
    cls, _ = head.assign(points, torch.tensor([[4.0, 8.0], [4.0, 8.0]]), torch.tensor([0, 2]))
    assert cls[6].tolist() == [1, 0, 1]
    cls, reg = head.assign(points, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    assert cls.sum() == 0 and cls.shape == (16, 3)


@pytest.mark.parametrize("block", [None, 4])  # one block, or 5 (the last one partial)
def test_banded_attention_equals_dense_attention_restricted_to_the_band(block):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 19, 4).unbind(0)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[1, 14:] = False
    steps = torch.arange(19)
    band = (steps[:, None] - steps[None]).abs() <= 2
    out = banded_attention(q, k, v, mask, 2, block)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band & mask[:, None, None, :])
    torch.testing.assert_close(out[0], dense[0])
    torch.testing.assert_close(out[1, :, :14], dense[1, :, :14])
    unmasked = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band)
    torch.testing.assert_close(banded_attention(q, k, v, None, 2, block), unmasked)


def test_pyramid_shapes_and_padding_never_changes_real_outputs():
    torch.manual_seed(0)
    head = Head(6, 4, SMALL).eval()
    x = torch.randn(2, 6, 16)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    logits, offsets, masks = head(x, mask)
    assert [lg.shape for lg in logits] == [(2, 16, 4), (2, 8, 4), (2, 4, 4)]
    assert [o.shape for o in offsets] == [(2, 16, 2), (2, 8, 2), (2, 4, 2)]
    assert (torch.cat(offsets, 1) >= 0).all()
    garbage = x.clone()
    garbage[1, :, 10:] = 100.0
    logits2, offsets2, _ = head(garbage, mask)
    for level, (a, b) in enumerate(zip(logits, logits2)):
        real = math.ceil(10 / 2 ** level)
        torch.testing.assert_close(a[1, :real], b[1, :real])
    with pytest.raises(ValueError, match="multiple of 4"):
        head(torch.randn(1, 6, 10), torch.ones(1, 10, dtype=torch.bool))


def test_classifier_starts_at_the_prior():
    head = Head(6, 3, SMALL)
    logits, _, _ = head(torch.zeros(1, 6, 8), torch.ones(1, 8, dtype=torch.bool))
    # The classifier's last bias is -log(99), whose sigmoid is the prior 0.01 (the small weights before it move
    # the start a little).
    torch.testing.assert_close(head.cls_head.out.bias, torch.full((3,), -math.log(99)), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.sigmoid(logits[0]), torch.full((1, 8, 3), 0.01), atol=0.02, rtol=0)


def test_detect_decodes_points_to_segments_keeps_real_steps_and_suppresses():
    head = Head(6, 2, SMALL)
    logits = [torch.full((1, n, 2), -20.0) for n in (16, 8, 4)]
    offsets = [torch.zeros(1, n, 2) for n in (16, 8, 4)]
    masks = [torch.ones(1, n, dtype=torch.bool) for n in (16, 8, 4)]
    logits[1][0, 3, 1] = 5.0  # level 1, point 3: position 6, distances (1, 2) strides of 2
    offsets[1][0, 3] = torch.tensor([1.0, 2.0])
    logits[0][0, 6, 1] = 4.0  # nearly the same segment, lower score: decayed by Soft-NMS
    offsets[0][0, 6] = torch.tensor([2.0, 4.0])
    logits[0][0, 14, 0] = 6.0  # beyond the video's 12 real steps: never reported
    offsets[0][0, 14] = torch.tensor([1.0, 1.0])
    (segments, scores, labels), = head.detect((logits, offsets, masks), [12])
    assert segments[0].tolist() == [4.0, 10.0] and labels[0] == 1
    assert scores[0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert scores[1] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item() * math.exp(-1 / 0.5))
    assert 14.0 - 1 not in segments[:, 0]


def test_loss_is_finite_without_actions_and_the_normaliser_follows_positives():
    torch.manual_seed(0)
    head = Head(6, 3, SMALL).train()
    x, mask = torch.randn(2, 6, 16), torch.ones(2, 16, dtype=torch.bool)
    targets = [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)), (torch.tensor([[2.0, 9.0]]), torch.tensor([1]))]
    losses = head.loss(head(x, mask), targets)
    assert all(torch.isfinite(v) for v in losses.values())
    # [2, 9], centre 5.5: positive at level 0 (radius 1.5, farther distance <= 4) points 5 and 6;
    # at level 1 (radius 3, distance 4-8) points 4, 6 and 8; none at level 2 (distance >= 8).
    assert head.loss_norm.item() == pytest.approx(0.9 * 100 + 0.1 * 5)
    losses["loss"].backward()
    assert head.cls_head.out.weight.grad.abs().sum() > 0 and head.reg_head.out.weight.grad.abs().sum() > 0
    head.loss(head(x[:1], mask[:1]), targets[:1])  # no action: counted as one positive
    assert head.loss_norm.item() == pytest.approx(0.9 * 90.5 + 0.1 * 1)
