"""Homography sampler and batched warps: conventions, patch inside the image, keypoints follow content."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from superpoint_training.common.config import ConfigError
from superpoint_training.data import homographies as hg
from superpoint_training.data.geometry import warp_image, warp_points
from superpoint_training.data.homographies import (
    SHAPES_HOMOGRAPHIC,
    HomographicAugmentation,
    compute_valid_mask,
    sample_homography,
    warp_images,
    warp_keypoint_maps,
)

SHAPE = (120, 160)
NO_ARTIFACTS = {**SHAPES_HOMOGRAPHIC["params"], "allow_artifacts": False}
OFF = {"translation": False, "rotation": False, "scaling": False, "perspective": False}


def _translation(dx: float, dy: float, batch: int = 1) -> torch.Tensor:
    return torch.tensor([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]]).expand(batch, 3, 3).clone()


def _outer_corners(h: int, w: int) -> torch.Tensor:
    return torch.tensor([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], dtype=torch.float64)


def test_shape_dtype_device_and_determinism():
    H = sample_homography(8, SHAPE, SHAPES_HOMOGRAPHIC["params"], torch.Generator().manual_seed(0))
    again = sample_homography(8, SHAPE, SHAPES_HOMOGRAPHIC["params"], torch.Generator().manual_seed(0))
    assert H.shape == (8, 3, 3) and H.dtype == torch.float32 and H.device.type == "cpu"
    torch.testing.assert_close(H, again)
    assert not torch.allclose(H[0], H[1])


def test_identity_and_centre_patch():
    torch.testing.assert_close(sample_homography(2, SHAPE, {**OFF, "patch_ratio": 1.0}), torch.eye(3).expand(2, 3, 3))
    # patch_ratio 0.5: the central half of the image (outer edges) is stretched to the whole image.
    H = sample_homography(1, SHAPE, {**OFF, "patch_ratio": 0.5})[0].double()
    h, w = SHAPE
    patch = torch.tensor([[w / 4 - 0.5, h / 4 - 0.5], [3 * w / 4 - 0.5, 3 * h / 4 - 0.5]], dtype=torch.float64)
    torch.testing.assert_close(warp_points(patch, H), torch.tensor([[-0.5, -0.5], [w - 0.5, h - 0.5]],
                                                                    dtype=torch.float64), atol=1e-4, rtol=0)


def test_patch_stays_inside_without_artifacts():
    H = sample_homography(128, SHAPE, NO_ARTIFACTS, torch.Generator().manual_seed(1)).double()
    h, w = SHAPE
    source = warp_points(_outer_corners(h, w)[None].expand(128, 4, 2), torch.linalg.inv(H))
    assert (source[..., 0] >= -0.5 - 1e-3).all() and (source[..., 0] <= w - 0.5 + 1e-3).all()
    assert (source[..., 1] >= -0.5 - 1e-3).all() and (source[..., 1] <= h - 0.5 + 1e-3).all()
    mask = compute_valid_mask(SHAPE, H.float())
    assert mask.mean() > 0.999
    # The sampler does rotate and scale: the warps are varied.
    angles = torch.atan2(H[:, 1, 0], H[:, 0, 0])
    assert angles.abs().max() > 0.2


def test_artifacts_allowed_leave_some_pixels_without_content():
    H = sample_homography(64, SHAPE, SHAPES_HOMOGRAPHIC["params"], torch.Generator().manual_seed(2))
    mask = compute_valid_mask(SHAPE, H)
    assert (mask.flatten(1).mean(1) < 0.99).any()
    assert mask.mean() > 0.5


def test_truncated_normal_is_cut_at_two_sigma():
    values = hg._truncated_normal((20000,), 1.0, 0.1, torch.Generator().manual_seed(0))
    assert values.min() >= 0.8 - 1e-9 and values.max() <= 1.2 + 1e-9
    assert abs(values.mean().item() - 1.0) < 0.005
    assert 0.08 < values.std().item() < 0.092  # 0.88 sigma for a normal cut at 2 sigma


def test_warp_images_matches_opencv(photo_gray):
    image = cv2.resize(photo_gray, (160, 120), interpolation=cv2.INTER_AREA)
    H = sample_homography(3, SHAPE, NO_ARTIFACTS, torch.Generator().manual_seed(3))
    ours = warp_images(torch.from_numpy(image).float()[None, None].expand(3, 1, -1, -1), H)
    valid = compute_valid_mask(SHAPE, H, erosion_radius=1).bool()
    for i in range(3):
        theirs = warp_image(image.astype(np.float32), H[i].double().numpy())
        diff = np.abs(ours[i, 0].numpy() - theirs)[valid[i].numpy()]
        assert diff.mean() < 0.1 and diff.max() < 1.0


def test_warped_keypoints_follow_a_bright_dot():
    h, w = SHAPE
    generator = torch.Generator().manual_seed(4)
    H = sample_homography(16, SHAPE, NO_ARTIFACTS, generator)
    xs = torch.randint(40, w - 40, (16,), generator=generator)
    ys = torch.randint(30, h - 30, (16,), generator=generator)
    images = torch.zeros(16, 1, h, w)
    kmaps = torch.zeros(16, h, w)
    for i in range(16):
        images[i, 0, ys[i] - 1:ys[i] + 2, xs[i] - 1:xs[i] + 2] = 1.0
        kmaps[i, ys[i], xs[i]] = 1.0
    warped_images, warped_maps = warp_images(images, H), warp_keypoint_maps(kmaps, H)
    for i in range(16):
        points = torch.nonzero(warped_maps[i])
        assert len(points) == 1
        y, x = points[0].tolist()
        blob = warped_images[i, 0]
        total = blob.sum()
        centre_y = (blob.sum(1) * torch.arange(h)).sum() / total
        centre_x = (blob.sum(0) * torch.arange(w)).sum() / total
        assert abs(centre_x - x) <= 0.75 and abs(centre_y - y) <= 0.75, (i, (x, y), (centre_x, centre_y))


def test_warp_keypoint_maps_drops_points_that_leave():
    kmap = torch.zeros(2, *SHAPE)
    kmap[:, 10, 150] = 1
    kmap[:, 60, 20] = 1
    out = warp_keypoint_maps(kmap, _translation(15.4, 0.0, 2))
    assert out.sum() == 2 and out[0, 60, 35] == 1 and out[1, 60, 35] == 1


def test_valid_mask_erodes_only_the_warp_border():
    mask = compute_valid_mask(SHAPE, _translation(10, 0), erosion_radius=0)[0]
    assert (mask[:, :10] == 0).all() and (mask[:, 10:] == 1).all()
    eroded = compute_valid_mask(SHAPE, _translation(10, 0), erosion_radius=2)[0]
    assert (eroded[:, :12] == 0).all() and (eroded[:, 12:] == 1).all()  # image borders stay valid
    assert compute_valid_mask(SHAPE, torch.eye(3)[None], erosion_radius=3).all()


def test_homographic_augmentation_on_a_batch():
    b, (h, w) = 4, SHAPE
    kmap = torch.zeros(b, h, w)
    kmap[:, 60, 80] = 1
    batch = {"image": torch.rand(b, 1, h, w), "keypoint_map": kmap, "valid_mask": torch.ones(b, h, w),
             "name": ["a", "b", "c", "d"]}
    out = HomographicAugmentation(SHAPES_HOMOGRAPHIC)(batch, torch.Generator().manual_seed(0))
    assert out["image"].shape == (b, 1, h, w) and out["valid_mask"].shape == (b, h, w)
    assert out["homography"].shape == (b, 3, 3) and out["name"] == batch["name"]
    assert out["valid_mask"].dtype == torch.float32 and set(torch.unique(out["valid_mask"]).tolist()) <= {0.0, 1.0}
    expected = warp_points(torch.tensor([[80.0, 60.0]]), out["homography"]).round()
    for i in range(b):
        inside = (0 <= expected[i, 0, 0] <= w - 1) and (0 <= expected[i, 0, 1] <= h - 1)
        assert out["keypoint_map"][i].sum() == int(inside)
        if inside:
            assert out["keypoint_map"][i, int(expected[i, 0, 1]), int(expected[i, 0, 0])] == 1
    # A source valid mask travels with the image (here: the left half invalid).
    half = dict(batch, valid_mask=torch.cat([torch.zeros(b, h, w // 2), torch.ones(b, h, w // 2)], 2))
    identity = HomographicAugmentation({"params": {**OFF, "patch_ratio": 1.0}})(half)
    torch.testing.assert_close(identity["valid_mask"], half["valid_mask"])
    torch.testing.assert_close(identity["image"], batch["image"])


def test_disabled_is_identity():
    batch = {"image": torch.rand(2, 1, *SHAPE)}
    out = HomographicAugmentation({"enable": False})(batch)
    assert out["image"] is batch["image"]
    torch.testing.assert_close(out["homography"], torch.eye(3).expand(2, 3, 3))


def test_rotation_range_is_bounded_by_max_angle():
    # A square image: the reference rotates in coordinates normalised by the image size, which is a
    # rotation in pixels only when H == W.
    params = {**OFF, "rotation": True, "patch_ratio": 1.0, "allow_artifacts": True, "max_angle": 0.5}
    H = sample_homography(200, (128, 128), params, torch.Generator().manual_seed(5)).double()
    angles = torch.atan2(H[:, 1, 0], H[:, 0, 0]).abs()
    assert angles.max() <= 0.5 + 1e-5 and angles.max() > 0.45
    assert len(torch.unique(angles.round(decimals=4))) > 5  # several of the 25 angles drawn
    assert math.isclose(hg.SAMPLER_DEFAULTS["max_angle"], math.pi / 2)


def test_full_rotation_probability_mixes_full_turns_into_the_range():
    params = {**OFF, "rotation": True, "patch_ratio": 1.0, "allow_artifacts": True, "max_angle": 0.5}
    reference = sample_homography(50, (128, 128), params, torch.Generator().manual_seed(5))
    unchanged = sample_homography(50, (128, 128), {**params, "full_rotation_probability": 0.0},
                                  torch.Generator().manual_seed(5))
    assert torch.equal(reference, unchanged)  # the key at 0 draws nothing: the reference's stream
    H = sample_homography(400, (128, 128), {**params, "full_rotation_probability": 0.5},
                          torch.Generator().manual_seed(5)).double()
    angles = torch.atan2(H[:, 1, 0], H[:, 0, 0]).abs()
    beyond = (angles > 0.5 + 1e-5).float().mean().item()
    # Half the samples draw from +-pi, and 21 of those 25 angles lie beyond 0.5 rad: about 0.42.
    assert 0.3 < beyond < 0.55, beyond
    assert angles.max() > 3.0


def test_unknown_sampler_key_is_an_error():
    with pytest.raises(ConfigError, match="params.patchratio"):
        sample_homography(1, SHAPE, {"patchratio": 0.5})
    with pytest.raises(ConfigError, match="homographic.valid_margin"):
        HomographicAugmentation({"valid_margin": 2})
