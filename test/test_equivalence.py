"""The Extractor equals the publishing implementations on the same weights, at any image size
(issues: foundation, 12)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import assert_same_features, random_state_dict
from reference_superpoint import reference_superpoint

from superpoint_training import Extractor, load_superpoint

ODD_SIZES = [(237, 317), (376, 1241), (481, 641)]  # not multiples of 8; 376x1241 is KITTI's


def _sorted(keypoints, *others):
    order = np.lexsort((keypoints[:, 0], keypoints[:, 1]))
    return (keypoints[order], *(o[order] for o in others))


def _photo(height: int, width: int) -> np.ndarray:
    """A real photo (scikit-image's astronaut, gray) at (height, width), float32 in [0, 1]."""
    import cv2
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _assert_equal_to_reference(features, reference) -> None:
    ref_kp, ref_scores, ref_desc = reference
    assert len(features) == len(ref_kp)
    kp, scores, desc = _sorted(features.keypoints, features.scores, features.descriptors)
    ref_kp, ref_scores, ref_desc = _sorted(ref_kp, ref_scores, ref_desc)
    np.testing.assert_array_equal(kp, ref_kp)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(desc, ref_desc, atol=1e-4)


@pytest.mark.parametrize("variant", ["v1", "v6"])
@pytest.mark.parametrize("max_keypoints", [None, 100])
def test_extractor_equals_reference(variant, max_keypoints, photo_gray):
    state = random_state_dict(variant, seed=1)
    assert load_superpoint(state).format == variant
    extractor = Extractor(state, device="cpu", max_keypoints=max_keypoints, warmup=False)
    image = photo_gray[:160, :224].astype(np.float32) / 255.0
    features = extractor(image).numpy()
    ref_kp, ref_scores, ref_desc = reference_superpoint(state, image, variant, max_keypoints=max_keypoints)
    assert 20 < len(ref_kp) < 2000, "scores should look like a trained net's"
    _assert_equal_to_reference(features, (ref_kp, ref_scores, ref_desc))
    assert np.all(np.diff(features.scores) <= 0), "scores come in descending order"


@pytest.mark.parametrize("variant", ["v1", "v6"])
@pytest.mark.parametrize("size", ODD_SIZES, ids=[f"{h}x{w}" for h, w in ODD_SIZES])
def test_extractor_equals_reference_at_odd_sizes(variant, size):
    """At sizes that are not multiples of 8 the publishers' networks see the whole image and
    their score maps stop at 8*floor(H/8) rows and 8*floor(W/8) columns; so do ours."""
    state = random_state_dict(variant, seed=2)
    image = _photo(*size)
    extractor = Extractor(state, device="cpu", warmup=False)  # every keypoint: no top-k cut among ties
    features = extractor(image).numpy()
    reference = reference_superpoint(state, image, variant)
    assert len(reference[0]) > 100, "scores should look like a trained net's"
    # the same points, scores within 1e-5, descriptors within 1e-4; a point may differ only where a
    # score ties with the threshold to float32 rounding (other CPUs' kernels round differently)
    kp, scores, desc = reference
    assert_same_features(features, SimpleNamespace(keypoints=kp, scores=scores, descriptors=desc),
                         max_boundary_swaps=2)
    assert features.image_size == size


@pytest.mark.parametrize("variant", ["v1", "v6"])
def test_no_keypoint_beyond_the_covered_area_whatever_the_options(variant):
    """No border, no NMS, no threshold, fixed K, resize: still no keypoint from the last H mod 8
    rows or W mod 8 columns (the publishers' score maps do not cover them)."""
    height, width = 77, 95  # covered: 72 x 88
    image = _photo(height, width)
    state = random_state_dict(variant, seed=3)
    for options in (
        dict(remove_borders=0, nms_radius=0, detection_threshold=0.0),
        dict(remove_borders=0, nms_radius=0, detection_threshold=0.0, max_keypoints=10000, fixed_keypoints=True),
    ):
        features = Extractor(state, device="cpu", warmup=False, **options)(image).numpy()
        keypoints = features.keypoints if features.valid is None else features.keypoints[features.valid]
        assert len(keypoints) == 72 * 88, "every covered pixel is a keypoint at threshold 0 without NMS"
        assert keypoints[:, 0].max() == 87 and keypoints[:, 1].max() == 71
    resized = Extractor(state, device="cpu", warmup=False, remove_borders=0, nms_radius=0, detection_threshold=0.0,
                        resize=2 * width)(image).numpy()  # 154 x 190 for the network: covered 152 x 184
    assert resized.keypoints[:, 0].max() <= (184 - 0.5) * width / 190 - 0.5
    assert resized.keypoints[:, 1].max() <= (152 - 0.5) * height / 154 - 0.5


@pytest.mark.parametrize("variant", ["v1", "v6"])
def test_dense_scores_cover_the_publishers_area(variant):
    """Homographic adaptation's maps: the network's scores on the covered area, zero beyond it."""
    state = random_state_dict(variant, seed=4)
    image = torch.from_numpy(_photo(85, 101))[None, None]
    extractor = Extractor(state, device="cpu", warmup=False)
    scores = extractor.dense_scores(image)[0]
    assert scores.shape == (85, 101)
    assert float(scores[80:].abs().max()) == 0.0 and float(scores[:, 96:].abs().max()) == 0.0
    logits, _ = extractor.model(image, with_descriptors=False)
    expected = torch.softmax(logits[0].double(), 0)[:-1].reshape(8, 8, 10, 12).permute(2, 0, 3, 1).reshape(80, 96)
    torch.testing.assert_close(scores[:80, :96].double(), expected, atol=1e-6, rtol=0)


def test_format_defaults_pick_the_publishers_sampling():
    v1 = Extractor(random_state_dict("v1"), device="cpu", warmup=False)
    v6 = Extractor(random_state_dict("v6"), device="cpu", warmup=False)
    assert v1.config.descriptor_sampling == "legacy"
    assert v6.config.descriptor_sampling == "cell"
    for extractor in (v1, v6):
        assert (extractor.config.detection_threshold, extractor.config.nms_radius, extractor.config.remove_borders) == (
            0.005, 4, 4)
