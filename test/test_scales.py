"""Image pyramid (``scales``): levels detected separately, keypoints back in the input's pixels, one top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superpoint_training import Extractor
from superpoint_training.model.keypoints import DetectionConfig, merge_levels, parse_scales


@pytest.mark.parametrize(("given", "expected"), [
    ("1,0.5", (1.0, 0.5)), ("0.5, 1", (1.0, 0.5)), (0.5, (0.5,)), ([0.5, 1.0, 0.5], (1.0, 0.5)), ((1,), (1.0,)),
])
def test_scales_are_parsed_largest_first(given, expected):
    assert parse_scales(given) == expected
    assert DetectionConfig(scales=given).scales == expected


@pytest.mark.parametrize("bad", ["", "1,a", 0, 1.5, [1.0, -0.5], []])
def test_bad_scales_name_the_option(bad):
    with pytest.raises(ValueError, match="scales"):
        DetectionConfig(scales=bad)


def test_merge_keeps_the_strongest_valid_points_as_a_prefix():
    def level(scores, valid, offset):
        scores = torch.tensor([scores])
        keypoints = torch.arange(scores.shape[1] * 2, dtype=torch.float32).view(1, -1, 2) + offset
        return {"keypoints": keypoints, "scores": scores, "valid": torch.tensor([valid]),
                "descriptors": keypoints.repeat(1, 1, 2)}  # (1, K, 4): follows its keypoint

    a = level([0.9, 0.5, 0.001], [True, True, False], 0)
    b = level([0.7, 0.6, 0.002, 0.001], [True, True, False, False], 100)
    merged = merge_levels([a, b], k=3)
    assert merged["scores"][0].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert merged["valid"].all()
    assert torch.equal(merged["descriptors"], merged["keypoints"].repeat(1, 1, 2))
    assert merged["keypoints"][0, 1].tolist() == [100.0, 101.0]
    everything = merge_levels([a, b], k=None)  # no limit: every valid point, invalid ones left out
    assert everything["scores"].shape == (1, 4) and everything["valid"].all()
    fixed = merge_levels([a, b], k=6)  # fixed K: the invalid ones fill the tail
    assert fixed["valid"].tolist() == [[True] * 4 + [False] * 2]
    weighted = merge_levels([a, b], k=3, weights=[1.0, 0.5])  # the coarse level's scores count half
    assert weighted["scores"][0].tolist() == pytest.approx([0.9, 0.5, 0.35])
    assert weighted["keypoints"][0, 1].tolist() == [2.0, 3.0]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.camera()[::2, ::2].copy()  # 256x256 gray, CC0


def test_a_level_is_the_downscaled_image_in_the_input_pixels(photo):
    """scales=(0.5,) on an image == scale 1 on its antialiased half, coordinates times 2 (the score
    map's own refinement: corner's reads the input image, not the level)."""
    extractor = Extractor("superpoint_ros", device="cpu", warmup=False, max_keypoints=200, scales=(0.5,),
                          subpixel="gaussian")
    full = extractor(photo)
    image = torch.from_numpy(photo).float().div(255)[None, None]
    half = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    extractor.configure(scales=(1.0,))
    small = extractor(half[0, 0].numpy())
    assert len(full) == len(small) > 50
    np.testing.assert_allclose(full.keypoints.numpy(), (small.keypoints.numpy() + 0.5) * 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(full.descriptors.numpy(), small.descriptors.numpy(), atol=1e-5)


def test_pyramid_output_is_the_best_of_its_levels(photo):
    extractor = Extractor("superpoint_ros", device="cpu", warmup=False, max_keypoints=300)
    per_level = {}
    for scale in (1.0, 0.5):
        extractor.configure(scales=(scale,))
        features = extractor(photo)
        per_level[scale] = {tuple(np.round(k, 3)) for k in features.keypoints.numpy().tolist()}
    extractor.configure(scales=(1.0, 0.5))
    merged = extractor(photo)
    assert extractor.config.scales == (1.0, 0.5)
    assert len(merged) == min(300, len(per_level[1.0]) + len(per_level[0.5]))
    scores = merged.scores.numpy()
    assert np.all(np.diff(scores) <= 0)
    found = {tuple(np.round(k, 3)) for k in merged.keypoints.numpy().tolist()}
    assert found <= per_level[1.0] | per_level[0.5]
    coarse = np.array([tuple(np.round(k, 3)) not in per_level[1.0] for k in merged.keypoints.numpy().tolist()])
    assert merged.scores.numpy()[coarse].max() <= 0.5  # the 0.5 level's scores are halved
    assert found & per_level[0.5]  # the coarse level contributes
    fixed = Extractor("superpoint_ros", device="cpu", warmup=False, max_keypoints=300, fixed_keypoints=True,
                      scales="1,0.5")(photo)
    assert len(fixed) == 300 and int(fixed.valid.sum()) == len(merged) and bool(fixed.valid[: len(merged)].all())
    np.testing.assert_allclose(fixed.keypoints.numpy()[: len(merged)], merged.keypoints.numpy())


def test_levels_smaller_than_a_cell_are_left_out():
    extractor = Extractor("superpoint_ros", device="cpu", warmup=False, scales=(1.0, 0.25))
    features = extractor(np.full((24, 40), 128, np.uint8))  # the 0.25 level (6x10) is under one cell
    assert features.descriptors.shape[1] == 256
    extractor.configure(scales=(0.25,))  # no level left: no keypoint, not an error
    features = extractor(np.random.default_rng(0).integers(0, 255, (24, 40), dtype=np.uint8))
    assert len(features) == 0 and features.descriptors.shape == (0, 256)
