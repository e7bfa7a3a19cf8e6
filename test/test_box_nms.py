"""The reference's box NMS (``DetectionConfig.nms_box``) against a slow greedy version written from
its definition: rpautrat/SuperPoint ``box_nms`` = TensorFlow's ``non_max_suppression`` (IoU > 0.1
suppresses) on boxes of side ``size`` centred on every pixel at or above the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpoint_training.model.keypoints import DetectionConfig, box_nms, box_overlap_offsets, detect


def slow_box_nms(scores: np.ndarray, size: int, iou: float, threshold: float) -> np.ndarray:
    """Greedy NMS over boxes [x - s/2, x + s/2] x [y - s/2, y + s/2], one image (H, W)."""
    ys, xs = np.nonzero(scores >= threshold)
    # decreasing score; ties: the earlier pixel in row-major order (np.nonzero's order) first
    order = sorted(range(len(ys)), key=lambda i: (-scores[ys[i], xs[i]], i))
    half = size / 2.0
    kept: list[int] = []
    for i in order:
        box_i = (xs[i] - half, ys[i] - half, xs[i] + half, ys[i] + half)
        suppressed = False
        for j in kept:
            box_j = (xs[j] - half, ys[j] - half, xs[j] + half, ys[j] + half)
            inter_w = max(0.0, min(box_i[2], box_j[2]) - max(box_i[0], box_j[0]))
            inter_h = max(0.0, min(box_i[3], box_j[3]) - max(box_i[1], box_j[1]))
            inter = inter_w * inter_h
            union = size * size * 2.0 - inter
            if inter / union > iou:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    out = np.zeros_like(scores)
    for i in kept:
        out[ys[i], xs[i]] = scores[ys[i], xs[i]]
    return out


def score_maps(seed: int, b: int = 2, h: int = 20, w: int = 28) -> torch.Tensor:
    """Smooth peaks plus noise, some exact ties (quantised values) and some flat zeros."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, 1, h, w, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)[:, 0]
    maps = (smooth * 0.7 + 0.3 * noise[:, 0]).pow(3)
    maps = torch.round(maps * 40) / 40  # plateaus: equal scores next to each other
    maps[:, :3, :5] = 0
    return maps


@pytest.mark.parametrize("size", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_nms_equals_the_greedy_definition(size, seed):
    maps = score_maps(seed)
    threshold = 0.05
    fast = box_nms(maps, size, 0.1, threshold)
    for i in range(maps.shape[0]):
        expected = slow_box_nms(maps[i].numpy(), size, 0.1, threshold)
        np.testing.assert_array_equal(fast[i].numpy(), expected)
    assert int((fast > 0).sum()) > 5


@pytest.mark.parametrize("size", [4, 8])
def test_box_nms_on_ramps_and_fine_noise(size):
    """Monotone ramps (the longest chains of decisions) and distinct values on a larger map."""
    h, w = 36, 48
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ramp = ((xs + 0.37 * ys) / (w + h)).float()[None]
    noise = torch.rand(1, h, w, generator=torch.Generator().manual_seed(7))
    for maps in (ramp, torch.flip(ramp, dims=[2]), noise):
        expected = slow_box_nms(maps[0].numpy(), size, 0.1, 0.0)
        np.testing.assert_array_equal(box_nms(maps, size, 0.1, 0.0)[0].numpy(), expected)


def test_overlap_region_is_not_a_square():
    """Size 8, IoU 0.1: up to 6 px along a row, only 4 px along a diagonal (no max-pool does that)."""
    offsets = set(box_overlap_offsets(8, 0.1))
    assert (6, 0) in offsets and (7, 0) not in offsets and (0, -6) in offsets
    assert (4, 4) in offsets and (5, 4) in offsets and (5, 5) not in offsets and (6, 3) not in offsets
    four = set(box_overlap_offsets(4, 0.1))
    assert (3, 1) in four and (3, 2) not in four and (2, 2) in four
    # on a map: two equal-height peaks 6 px apart on a row -> one survives; 5 px apart diagonally -> both
    maps = torch.zeros(1, 30, 30)
    maps[0, 10, 10], maps[0, 10, 16] = 0.9, 0.8
    maps[0, 20, 5], maps[0, 25, 10] = 0.7, 0.6
    out = box_nms(maps, 8, 0.1, 0.01)
    assert out[0, 10, 10] == pytest.approx(0.9) and out[0, 10, 16] == 0
    assert out[0, 20, 5] == pytest.approx(0.7) and out[0, 25, 10] == pytest.approx(0.6)


def test_box_nms_edge_cases():
    empty = torch.zeros(1, 8, 8)
    assert box_nms(empty, 4, 0.1, 0.5).abs().sum() == 0
    one = torch.zeros(1, 8, 8)
    one[0, 0, 0] = 0.3
    assert torch.equal(box_nms(one, 8, 0.1, 0.1), one)
    # size 1: boxes never overlap above 0.1 at distinct pixels -> only the threshold applies
    maps = score_maps(3, b=1)
    assert torch.equal(box_nms(maps, 1, 0.1, 0.2), torch.where(maps >= 0.2, maps, 0))


def test_detect_with_box_nms_keeps_top_k_of_the_suppressed_map_and_defaults_unchanged():
    torch.manual_seed(0)
    logits = torch.randn(2, 65, 6, 8) * 3
    config = DetectionConfig(detection_threshold=0.001, remove_borders=0, nms_box=8, max_keypoints=20)
    out = detect(logits, None, config)
    from superpoint_training.model.keypoints import logits_to_scores

    reference = box_nms(logits_to_scores(logits), 8, 0.1, 0.001)
    for i in range(2):
        values = reference[i].flatten()
        best = values.topk(20).values
        np.testing.assert_allclose(out["scores"][i].numpy(), best.numpy())
        xy = out["keypoints"][i].long()
        assert torch.equal(reference[i][xy[:, 1], xy[:, 0]], out["scores"][i])
    assert DetectionConfig().nms_box == 0  # the default stays the max-pool
    with pytest.raises(ValueError, match="nms_box"):
        DetectionConfig(nms_box=-1)
