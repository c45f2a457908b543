import math

import numpy as np
import pytest
from actloc.methods.nms import per_class, suppress



def test_gaussian_soft_nms_decays_overlaps_by_hand():
    segments = np.array([[0.0, 10.0], [0.0, 5.0], [20.0, 30.0]])
    keep, scores = suppress(segments, np.array([0.9, 0.8, 0.5]), "soft", sigma=0.5)
    # [0, 5] overlaps [0, 10] with IoU 0.5: 0.8 * exp(-0.25 / 0.5) = 0.485 < 0.5.
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, 0.5, 0.8 * math.exp(-0.25 / 0.5)])


def test_hard_nms_drops_overlaps_above_the_threshold():
    segments = np.array([[0.0, 10.0], [0.0, 5.0], [9.5, 20.0]])
    keep, scores = suppress(segments, np.array([0.9, 0.8, 0.5]), "hard", iou_threshold=0.1)
    assert keep.tolist() == [0, 2]  # [9.5, 20] overlaps [0, 10] by 0.025
    np.testing.assert_allclose(scores, [0.9, 0.5])


def test_scores_below_min_score_are_dropped_and_the_limit_stops_early():
    segments = np.array([[0.0, 10.0], [0.0, 10.0], [30.0, 40.0]])
    keep, _ = suppress(segments, np.array([0.9, 0.002, 0.6]), "soft", min_score=0.001)
    assert keep.tolist() == [0, 2]  # the duplicate decays to 0.002 * e^-2 < 0.001
    assert suppress(segments, np.array([0.9, 0.8, 0.6]), limit=1)[0].tolist() == [0]


def test_classes_never_suppress_each_other_and_the_best_overall_are_kept():
    segments = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [50.0, 60.0]])
    scores = np.array([0.9, 0.7, 0.8, 0.3])
    labels = np.array([0, 1, 0, 1])
    out_segments, out_scores, out_labels = per_class(segments, scores, labels, max_segments=3)
    assert out_labels.tolist() == [0, 1, 1]
    np.testing.assert_allclose(out_scores, [0.9, 0.7, 0.3])  # 0.8 decayed to 0.8 / e^2 = 0.108
    assert out_segments.tolist() == [[0, 10], [0, 10], [50, 60]]
    empty = per_class(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64))
    assert [len(x) for x in empty] == [0, 0, 0]
    with pytest.raises(ValueError, match="soft or hard"):
        per_class(segments, scores, labels, method="linear")


def test_box_voting_moves_each_kept_segment_to_its_neighbours_weighted_mean_by_hand():
    segments = np.array([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0], [0.0, 5.0]])
    scores = np.array([0.9, 0.6, 0.8, 0.5])
    labels = np.zeros(4, np.int64)
    kept, kept_scores, _ = per_class(segments, scores, labels, "hard", iou_threshold=0.5, voting=0.85)
    # [0, 10] is kept; [1, 10] (tIoU 0.9) is suppressed but votes: start (0.9 * 0 + 0.6 * 1) / 1.5 = 0.4;
    # [0, 5] (tIoU 0.5) survives hard NMS at 0.5 but is too far to vote for [0, 10] at 0.85.
    np.testing.assert_allclose(kept, [[0.4, 10.0], [20.0, 30.0], [0.0, 5.0]])
    assert kept_scores.tolist() == [0.9, 0.8, 0.5]
    plain, _, _ = per_class(segments, scores, labels, "hard", iou_threshold=0.5)
    assert plain.tolist() == [[0.0, 10.0], [20.0, 30.0], [0.0, 5.0]]
    # Voting stays within a class.
    other, _, _ = per_class(segments, scores, np.array([0, 1, 0, 0]), "hard", iou_threshold=0.5, voting=0.85)
    assert [0.0, 10.0] in other.tolist()
