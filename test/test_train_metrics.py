"""Detector metrics (precision, recall, mAP, localisation error) on hand-made probability maps."""

from __future__ import annotations

import math

import numpy as np
import torch

from superpoint_training.training.detector_metrics import DetectorMetricsAccumulator


def test_perfect_and_shifted_detections():
    gt = np.array([[10.0, 10.0], [30.0, 20.0]])
    prob = np.zeros((40, 48))
    prob[10, 10] = 0.9  # exact
    prob[20, 32] = 0.8  # 2 px off
    prob[35, 40] = 0.5  # false positive
    prob[10, 12] = 0.05  # second detection of the first corner: a false positive
    acc = DetectorMetricsAccumulator(distance_threshold=4, detection_threshold=0.3)
    acc.add_image(prob, gt)
    m = acc.compute()
    assert m["precision"] == 2 / 3 and m["recall"] == 1.0
    assert math.isclose(m["mAP"], 1.0 * 0.5 + 1.0 * 0.5)  # both TPs come first
    assert math.isclose(m["localization_error"], 1.0)  # (0 + 2) / 2
    acc2 = DetectorMetricsAccumulator(distance_threshold=4, detection_threshold=0.3)
    prob2 = prob.copy()
    prob2[35, 40] = 0.95  # false positive ranked first
    acc2.add_image(prob2, gt)
    assert math.isclose(acc2.compute()["mAP"], 0.5 * 0.5 + 2 / 3 * 0.5)


def test_no_detections_and_batched_scores():
    acc = DetectorMetricsAccumulator()
    acc.add_image(np.zeros((16, 16)), np.array([[4.0, 4.0]]))
    m = acc.compute()
    assert m["precision"] == 0 and m["recall"] == 0 and m["mAP"] == 0 and math.isnan(m["localization_error"])
    scores = torch.zeros(2, 24, 24)
    kmap = torch.zeros(2, 24, 24)
    scores[0, 5, 6] = scores[1, 12, 12] = 0.9
    scores[0, 5, 7] = 0.5  # suppressed by NMS
    kmap[0, 5, 6] = kmap[1, 13, 12] = 1
    acc = DetectorMetricsAccumulator(nms_radius=2)
    acc.add_scores(scores, kmap)
    m = acc.compute()
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and math.isclose(m["localization_error"], 0.5)
