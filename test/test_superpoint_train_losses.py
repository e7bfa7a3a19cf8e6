"""SuperPoint training pieces: descriptor loss on hand cases, loss presets, warped pairs, validation patches."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superpoint_training.common.config import ConfigError
from superpoint_training.data.geometry import warp_points
from superpoint_training.data.pairs import WARPED_PAIR, WarpedPairs
from superpoint_training.data.validation_patches import generate_patches, load_patches
from superpoint_training.training.losses import descriptor_loss
from superpoint_training.training.superpoint_task import LOSS_PRESETS, loss_weights

HC, WC = 3, 4
N = HC * WC


def one_hot(sign: float = 1.0) -> torch.Tensor:
    """(1, N, Hc, Wc): cell i has descriptor e_i (all cells distinct and orthogonal)."""
    return sign * torch.eye(N).reshape(N, HC, WC)[None]


def test_descriptor_loss_hand_cases():
    eye = torch.eye(3)[None]
    # matching cells agree, all others are orthogonal: nothing to pay
    assert descriptor_loss(one_hot(), one_hot(), eye, lambda_d=250.0).item() == 0.0
    # every cell the same descriptor: each of the N(N-1) negative pairs pays 1 - 0.2
    same = torch.ones(1, 8, HC, WC)
    expected = 0.8 * (N - 1) / N
    assert descriptor_loss(same, same, eye).item() == pytest.approx(expected, rel=1e-5)
    # opposite descriptors at matching cells: each of the N positives pays lambda_d * (1 - (-1))
    assert descriptor_loss(one_hot(), one_hot(-1.0), eye, lambda_d=800.0).item() == pytest.approx(2 * 800 / N)
    # a shift by one cell (8 px): cell (y, x) of image 0 is cell (y, x + 1) of image 1
    shift = torch.tensor([[1.0, 0, 8], [0, 1, 0], [0, 0, 1]])[None]
    shifted = torch.roll(one_hot(), shifts=1, dims=3)
    shifted[..., 0] = 0  # nothing maps onto the first column
    loss = descriptor_loss(one_hot(), shifted, shift, lambda_d=1.0)
    # the positives that leave image 1 (last column of image 0) have no partner; the rest are satisfied
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert descriptor_loss(one_hot(), one_hot(), shift, lambda_d=1.0).item() > 0.0
    # the valid mask of image 1 restricts the average to its valid cells
    invalid = torch.zeros(1, 8 * HC, 8 * WC)
    assert descriptor_loss(same, same, eye, invalid).item() == 0.0


def test_descriptor_loss_is_finite_for_zero_descriptors_and_degenerate_homographies():
    zeros = torch.zeros(1, 8, HC, WC, requires_grad=True)
    degenerate = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.1, 0, -1.0]])[None]  # some centres map to infinity
    loss = descriptor_loss(zeros, zeros, degenerate)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zeros.grad).all()


def test_loss_presets():
    base = {"lambda_d": 250.0, "lambda_loss": 0.0001, "positive_margin": 1.0, "negative_margin": 0.2}
    assert loss_weights(base)["lambda_d"] == 250.0
    v6 = loss_weights({**base, "preset": "v6_release"})
    assert (v6["lambda_d"], v6["lambda_loss"]) == (800.0, 1.0)
    assert LOSS_PRESETS["v6_release"]["batch_size"] == 3 and LOSS_PRESETS["v6_release"]["learning_rate"] == 1e-4
    assert (LOSS_PRESETS["paper"]["lambda_d"], LOSS_PRESETS["paper"]["lambda_loss"]) == (250.0, 0.0001)
    assert (LOSS_PRESETS["reference_config"]["lambda_d"], LOSS_PRESETS["reference_config"]["lambda_loss"]) == (
        0.05, 10000.0)
    with pytest.raises(ConfigError, match="loss.preset"):
        loss_weights({**base, "preset": "best"})


def test_warped_pairs_move_keypoints_with_the_homography(photo_gray):
    image = torch.from_numpy(photo_gray[:64, :96].copy()).float().div(255)[None, None].repeat(2, 1, 1, 1)
    kmap = torch.zeros(2, 64, 96)
    kmap[:, 32, 48] = 1
    pairs = WarpedPairs(WARPED_PAIR, None)
    out = pairs({"image": image, "keypoint_map": kmap, "valid_mask": torch.ones(2, 64, 96)},
                generator=torch.Generator().manual_seed(0))
    assert out["warped_image"].shape == image.shape and torch.equal(out["image"], image)
    for b in range(2):
        expected = warp_points(torch.tensor([[48.0, 32.0]]), out["homography"][b]).round()
        found = torch.nonzero(out["warped_keypoint_map"][b])
        if len(found):
            assert found[0].flip(0).float().tolist() == expected[0].tolist()
        assert 0 < out["warped_valid_mask"][b].mean() <= 1
    # photometric changes on both images, independently
    photometric = {"enable": True, "primitives": ["random_brightness"], "params": {"random_brightness": {"max_abs_change": 50}}}
    both = WarpedPairs({**WARPED_PAIR, "enable": False}, photometric)(
        {"image": image, "keypoint_map": kmap}, generator=torch.Generator().manual_seed(1))
    assert torch.equal(both["homography"], torch.eye(3).expand(2, 3, 3))
    assert not torch.equal(both["image"], image) and not torch.allclose(both["image"], both["warped_image"])


def test_validation_patches_are_written_once_with_consistent_homographies(tmp_path, photo_gray):
    sources = []
    for i, crop in enumerate((photo_gray, photo_gray[:, ::-1])):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(crop))
        sources.append(path)
    (tmp_path / "broken.png").write_bytes(b"x")
    folder = generate_patches([*sources, tmp_path / "broken.png"], tmp_path / "patches", (48, 64), 0.5)
    pairs = load_patches(folder)
    assert [p[0] for p in pairs] == ["v_00000_img0", "v_00001_img1"]
    name, image1, image2, H = pairs[0]
    assert image1.shape == (48, 64) and image2.shape == (24, 32)
    # image 2 is image 1 warped by H (the scale included)
    rewarped = cv2.warpPerspective(image1, H, (32, 24), flags=cv2.INTER_AREA)
    valid = cv2.warpPerspective(np.ones_like(image1), H, (32, 24)) > 0
    valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    error = np.abs(rewarped.astype(float) - image2.astype(float))[valid]
    assert valid.sum() > 100 and error.mean() < 12
    stamp = (folder / name / "1.png").stat().st_mtime_ns
    generate_patches(sources, folder, (48, 64))  # complete: left alone
    assert (folder / name / "1.png").stat().st_mtime_ns == stamp


def test_normalised_descriptors_give_bounded_losses():
    torch.manual_seed(0)
    d0, d1 = torch.randn(2, 16, HC, WC), torch.randn(2, 16, HC, WC)
    loss = descriptor_loss(F.normalize(d0, dim=1), d1, torch.eye(3).expand(2, 3, 3), lambda_d=1.0)
    assert 0 <= loss.item() <= 2.0
