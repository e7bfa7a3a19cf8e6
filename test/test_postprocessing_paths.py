"""The cheaper post-processing paths give what the plain formulations give.

NMS dilates its masks as bool maps, the top-k of a map after NMS looks at its positive entries only,
descriptors are read from the four cells around each keypoint instead of a normalised copy of the
whole map, and a pyramid samples each kept point once, from its own level. Each is checked here
against the plain formulation (the numpy NMS of the reference port, a top-k of the whole map,
``grid_sample`` on ``F.normalize`` of the map, every level sampled and picked), on maps with ties,
at the edges and in batches; and the pyramid's eager path against its traced path.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_superpoint import _nms as reference_nms  # SuperGlue's NMS in numpy

from superpoint_training.model import keypoints as kp
from superpoint_training.model.keypoints import (
    nms,
    sample_descriptors,
    sample_level_descriptors,
    sample_normalised_descriptors,
    top_k_keypoints,
)


def score_maps() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    smooth = F.avg_pool2d(torch.rand(2, 1, 96, 128, generator=g), 5, 1, 2)[:, 0]
    ties = torch.randint(0, 4, (2, 40, 56), generator=g).float() / 4  # plateaus and equal maxima
    sparse = torch.where(torch.rand(1, 64, 80, generator=g) > 0.97, torch.rand(1, 64, 80, generator=g), 0.0)
    return [smooth, ties, sparse, torch.rand(3, 9, 5, generator=g)]


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_nms_with_bool_masks_is_the_float_max_pool_definition(radius):
    for scores in score_maps():
        expected = np.stack([reference_nms(m, radius) for m in scores.numpy()])
        assert np.array_equal(nms(scores, radius).numpy(), expected)


@pytest.mark.parametrize("k", [None, 1, 50, 400, 10_000])
def test_top_k_of_the_positive_entries_is_the_top_k_of_the_map(k):
    for scores in score_maps():
        scores = nms(scores, 2)
        keypoints, values, valid = top_k_keypoints(scores, 0.3, k)
        b, h, w = scores.shape
        kk = min(k if k is not None else int((scores > 0.3).reshape(b, -1).sum(1).max()), h * w)
        expected_values, expected_index = scores.reshape(b, -1).topk(kk, dim=1)
        assert torch.equal(values, expected_values) and torch.equal(valid, expected_values > 0.3)
        for row in range(b):  # the same points; equal scores may come in another order, and at the
            # k-th score either of two equal points may be taken
            index = keypoints[row, :, 1].long() * w + keypoints[row, :, 0].long()
            assert torch.equal(scores.reshape(b, -1)[row, index], values[row])
            above = expected_values[row] > expected_values[row, -1]
            assert set(index[above].tolist()) == set(expected_index[row][above].tolist())


@pytest.mark.parametrize("mode", ["cell", "legacy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_descriptors_from_four_cells_are_the_normalised_maps_samples(mode, dtype):
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(2, 32, 12, 16, generator=g).to(dtype)
    points = torch.rand(2, 200, 2, generator=g) * torch.tensor([16 * 8 + 10.0, 12 * 8 + 10.0]) - 5
    points[0, :4] = torch.tensor([[0.0, 0.0], [127.0, 95.0], [-4.5, 3.0], [131.0, 99.0]])  # edges, outside
    expected = sample_descriptors(F.normalize(dense.float(), p=2, dim=1), points, mode)
    got = sample_normalised_descriptors(dense, points, mode)
    assert got.shape == expected.shape == (2, 200, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)  # zero where all four cells are outside


def test_pyramid_descriptors_come_once_from_each_points_level():
    g = torch.Generator().manual_seed(2)
    dense_maps = [torch.randn(2, 16, 12, 16, generator=g), torch.randn(2, 16, 6, 8, generator=g)]
    points = torch.rand(2, 50, 2, generator=g) * torch.tensor([128.0, 96.0])
    level = torch.randint(0, 2, (2, 50), generator=g, dtype=torch.int32)
    level[1] = 0  # a row with no point of level 1
    every = [sample_normalised_descriptors(dense, points, "cell") for dense in dense_maps]
    expected = torch.where((level == 1)[..., None], every[1], every[0])
    eager = sample_level_descriptors(dense_maps, points, level, "cell")
    assert torch.equal(eager, expected)
    with mock.patch.object(kp.torch.jit, "is_tracing", return_value=True):  # the traced graph's path
        assert torch.equal(sample_level_descriptors(dense_maps, points, level, "cell"), expected)
