"""Photometric augmentation: ranges, determinism, each operation's effect, OpenCV-equivalent blurs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from superpoint_training.common.config import ConfigError
from superpoint_training.data import augmentation as aug
from superpoint_training.data.augmentation import OPERATIONS, PhotometricAugmentation, photometric_config


def _only(operation: str, preset: str = "shapes") -> PhotometricAugmentation:
    return PhotometricAugmentation(photometric_config(preset, primitives=[operation]))


@pytest.fixture
def batch(photo_gray) -> torch.Tensor:
    image = torch.from_numpy(cv2.resize(photo_gray, (80, 60), interpolation=cv2.INTER_AREA)).float() / 255
    return image[None, None].repeat(4, 1, 1, 1)


def test_presets_hold_the_reference_values():
    shapes = aug.PRESETS["shapes"]
    assert shapes["random_brightness"]["max_abs_change"] == 75
    assert shapes["random_contrast"]["strength_range"] == [0.3, 1.8]
    assert shapes["additive_gaussian_noise"]["stddev_range"] == [0, 15]
    assert shapes["additive_speckle_noise"]["prob_range"] == [0, 0.0035]
    assert shapes["additive_shade"] == {"transparency_range": [-0.5, 0.8], "kernel_size_range": [50, 100]}
    assert shapes["motion_blur"]["max_kernel_size"] == 7
    assert aug.PRESETS["magicpoint_coco"]["random_contrast"]["strength_range"] == [0.3, 1.5]
    assert aug.PRESETS["superpoint_coco"]["random_contrast"]["strength_range"] == [0.5, 1.5]
    assert aug.PRESETS["superpoint_coco"]["motion_blur"]["max_kernel_size"] == 3


def test_all_operations_shape_range_and_determinism(batch):
    augment = PhotometricAugmentation(photometric_config("shapes"))
    assert augment.operations == list(OPERATIONS)
    out = augment(batch, torch.Generator().manual_seed(0))
    again = augment(batch, torch.Generator().manual_seed(0))
    other = augment(batch, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, again)
    assert not torch.equal(out, other)
    # Per-image parameters: identical inputs come out different.
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_operation_changes_the_image(batch, operation):
    out = _only(operation)(batch, torch.Generator().manual_seed(3))
    assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    assert (out - batch).abs().mean() > 1e-4


def test_disabled_is_identity(batch):
    augment = PhotometricAugmentation({"enable": False})
    assert augment(batch) is batch


def test_brightness_is_a_bounded_shift():
    flat = torch.full((64, 1, 8, 8), 0.5)
    out = _only("random_brightness")(flat, torch.Generator().manual_seed(0))
    shift = (out - flat).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift))  # one shift per image
    assert shift.abs().max() <= 75 / 255 + 1e-6
    assert shift.abs().max() > 30 / 255  # spread over the range


def test_contrast_keeps_the_mean(batch):
    augment = PhotometricAugmentation(photometric_config("shapes", primitives=["random_contrast"]))
    mid = 0.25 + 0.5 * batch  # no clipping at either end for factors up to 1.8
    out = augment(mid, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), mid.mean(dim=(1, 2, 3)), atol=1e-4, rtol=0)


def test_speckle_sets_few_pixels_to_black_or_white():
    flat = torch.full((8, 1, 100, 100), 0.5)
    out = _only("additive_speckle_noise")(flat, torch.Generator().manual_seed(0))
    changed = (out != 0.5).float().mean()
    assert 0 < changed <= 2 * 0.0035 + 0.002
    assert set(torch.unique(out).tolist()) <= {0.0, 0.5, 1.0}


def test_motion_blur_keeps_a_flat_image():
    flat = torch.full((8, 1, 20, 20), 0.4)
    out = _only("motion_blur")(flat, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, flat)


def test_gaussian_kernels_match_opencv():
    rng = np.random.default_rng(0)
    mask = (rng.random((1, 1, 40, 50)) > 0.7).astype(np.float32)
    for size in (9, 21, 51, 101):  # OpenCV uses fixed binomial kernels up to 7; 101 > the height
        ours = aug.gaussian_blur(torch.from_numpy(mask), torch.tensor([size]))
        theirs = cv2.GaussianBlur(mask[0, 0], (size, size), 0)
        # OpenCV 5 rounds its kernel taps to multiples of 1/256; same sigma and border handling.
        np.testing.assert_allclose(ours[0, 0].numpy(), theirs, atol=5e-3)


def test_motion_blur_kernel_matches_the_reference_rule():
    """A horizontal kernel of size k: a Gaussian-weighted row with variance k^2/16, normalised."""
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        out = aug.motion_blur(impulse, generator, max_kernel_size=7)[0, 0]
        support = torch.nonzero(out)
        assert abs(out.sum().item() - 1) < 1e-5
        rows, cols = support[:, 0].unique(), support[:, 1].unique()
        if len(rows) == 1 and len(cols) > 1:  # horizontal
            k = len(cols)
            offsets = torch.arange(k) - k // 2
            expected = torch.exp(-(offsets.double() ** 2) / (2 * k * k / 16))
            torch.testing.assert_close(out[7, 7 - k // 2:7 + k // 2 + 1].double(), expected / expected.sum(),
                                       atol=1e-6, rtol=0)
        seen.add(len(support))
    assert seen <= {1, 3, 5, 7} and len(seen) > 1


def test_numpy_uint8_in_numpy_uint8_out(photo_gray):
    augment = PhotometricAugmentation(photometric_config("superpoint_coco"))
    photo_gray = np.ascontiguousarray(photo_gray[::2, ::2])
    out = augment(photo_gray, torch.Generator().manual_seed(0))
    assert out.dtype == np.uint8 and out.shape == photo_gray.shape
    assert np.abs(out.astype(int) - photo_gray).mean() > 0.5
    batch = np.stack([photo_gray, photo_gray])
    assert augment(batch).shape == batch.shape


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match="random_brightnes"):
        PhotometricAugmentation({"primitives": ["random_brightnes"]})
    with pytest.raises(ConfigError, match="params.random_contrast.strength"):
        PhotometricAugmentation({"params": {"random_contrast": {"strength": [0.1, 1]}}})
    with pytest.raises(ConfigError, match="randomorder"):
        PhotometricAugmentation({"randomorder": True})
    with pytest.raises(ConfigError, match="preset"):
        photometric_config("coco")
