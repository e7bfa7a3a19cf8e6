"""Homographic adaptation with detectors whose response is known: identity, translations, masks, selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from superpoint_training.common.config import ConfigError
from superpoint_training.model.extractor import Extractor
from superpoint_training.model.network import ModelConfig, SuperPoint
from superpoint_training.training.homographic_adaptation import (
    HomographicAdaptation,
    border_kernel,
    erode,
    merge_config,
)


def intensity(images: torch.Tensor) -> torch.Tensor:
    """A 'detector' that answers the image itself: equivariant to any warp."""
    return images[:, 0]


def smooth_images(b: int = 2, h: int = 40, w: int = 56) -> torch.Tensor:
    torch.manual_seed(0)
    return F.avg_pool2d(torch.rand(b, 1, h, w), 7, 1, 3)


def translation(dx: float, dy: float) -> torch.Tensor:
    return torch.tensor([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])


@pytest.fixture(scope="module")
def magicpoint() -> Extractor:
    torch.manual_seed(0)
    model = SuperPoint(ModelConfig(variant="v6", descriptor_dim=0))
    record = {"format": "superpoint_ros", "model_config": model.config.to_dict(), "model": model.state_dict()}
    return Extractor(record, device="cpu", warmup=False)


def test_identity_only_equals_plain_detection(magicpoint, photo_gray):
    image = torch.from_numpy(photo_gray[:48, :64].copy()).float().div(255)[None, None]
    plain = magicpoint.dense_scores(image)
    out = HomographicAdaptation(magicpoint, {"num": 1})(image)
    assert torch.equal(out["prob"], plain) and torch.equal(out["counts"], torch.ones_like(plain))
    # identity warps on top: the same map (bilinear sampling at pixel centres), counted 3 times
    eye = torch.eye(3).expand(1, 2, 3, 3)
    for aggregation in ("sum", "max"):
        out = HomographicAdaptation(magicpoint, {"num": 3, "aggregation": aggregation})(image, homographies=eye)
        assert torch.allclose(out["prob"], plain, atol=1e-5)
        assert torch.equal(out["counts"], torch.full_like(plain, 3))


def test_translation_is_undone_and_border_is_eroded():
    images = smooth_images(1)
    h, w = images.shape[-2:]
    adaptation = HomographicAdaptation(intensity, {"num": 2, "valid_border_margin": 3})
    out = adaptation(images, homographies=translation(10, 0).expand(1, 1, 3, 3))
    counts = out["counts"][0]
    # original columns x <= w - 11 are seen by the warp; the 6x6 kernel (2 before, 3 after) erodes 3 more
    assert torch.equal(counts[:, : w - 13], torch.full((h, w - 13), 2.0))
    assert torch.equal(counts[:, w - 13 :], torch.ones(h, 13))
    # where the warp's own valid mask also holds (columns >= 2), the mean is the image itself
    assert torch.allclose(out["prob"][0, :, 2 : w - 13], images[0, 0, :, 2 : w - 13], atol=1e-5)


def test_sum_is_the_mean_and_max_bounds_it():
    h, w = 40, 56
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    images = (0.5 + 0.4 * torch.sin(xs / 7) * torch.cos(ys / 9))[None, None].repeat(2, 1, 1, 1)
    generator = torch.Generator().manual_seed(3)
    adaptation = HomographicAdaptation(intensity, {"num": 12})
    homographies = adaptation.sample(2, (h, w), "cpu", generator)
    mean = adaptation(images, homographies=homographies)
    peak = HomographicAdaptation(intensity, {"num": 12, "aggregation": "max"})(
        images, homographies=homographies
    )
    assert torch.equal(mean["counts"], peak["counts"])
    assert mean["counts"].min() >= 1 and mean["counts"].max() <= 12
    # an equivariant detector: the aggregate is the image again, up to bilinear resampling
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert (mean["prob"] - images[:, 0])[inner].abs().max() < 0.04
    assert bool((peak["prob"] >= mean["prob"] - 1e-6).all())
    assert (peak["prob"] - images[:, 0])[inner].min() > -1e-6  # the identity term is in the max


def test_filter_counts_zeroes_rarely_seen_pixels():
    images = smooth_images(1)
    adaptation = HomographicAdaptation(intensity, {"num": 2, "valid_border_margin": 0, "filter_counts": 2})
    out = adaptation(images, homographies=translation(20, 0).expand(1, 1, 3, 3))
    assert bool((out["prob"][out["counts"] < 2] == 0).all())
    assert bool((out["prob"][out["counts"] >= 2] > 0).all())


def test_erosion_matches_the_reference_placement():
    mask = torch.ones(1, 12, 12)
    mask[:, :, :4] = 0
    eroded = erode(mask, border_kernel(3))
    assert torch.equal(eroded[0, 6], torch.tensor([0.0] * 6 + [1.0] * 6))  # window x-2 .. x+3
    assert erode(mask, border_kernel(0)) is mask


def test_select_nms_threshold_top_k():
    prob = torch.zeros(1, 32, 40)
    prob[0, 10, 12] = 0.9
    prob[0, 11, 13] = 0.5  # suppressed by its neighbour
    prob[0, 20, 30] = 0.3
    prob[0, 5, 5] = 0.01  # below the threshold
    out = HomographicAdaptation.select(prob, detection_threshold=0.015, nms_radius=4)
    valid = out["valid"][0]
    assert out["keypoints"][0][valid].tolist() == [[12.0, 10.0], [30.0, 20.0]]
    top1 = HomographicAdaptation.select(prob, 0.015, 4, top_k=1)
    assert top1["keypoints"].shape == (1, 1, 2)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="homography_adaptation.aggregation"):
        merge_config({"aggregation": "median"})
    with pytest.raises(ConfigError, match="homographies.patch_ratioo"):
        merge_config({"homographies": {"patch_ratioo": 0.8}})
    assert merge_config(None)["num"] == 100 and merge_config(None)["homographies"]["patch_ratio"] == 0.85
