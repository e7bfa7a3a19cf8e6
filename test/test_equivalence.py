"""The Extractor equals the publishing implementations on the same weights (issue: foundation)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_state_dict
from reference_superpoint import reference_superpoint

from superpoint_training import Extractor, load_superpoint


def _sorted(keypoints, *others):
    order = np.lexsort((keypoints[:, 0], keypoints[:, 1]))
    return (keypoints[order], *(o[order] for o in others))


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
    assert len(features) == len(ref_kp)
    kp, scores, desc = _sorted(features.keypoints, features.scores, features.descriptors)
    ref_kp, ref_scores, ref_desc = _sorted(ref_kp, ref_scores, ref_desc)
    np.testing.assert_array_equal(kp, ref_kp)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(desc, ref_desc, atol=1e-4)
    assert np.all(np.diff(features.scores) <= 0), "scores come in descending order"


def test_format_defaults_pick_the_publishers_sampling():
    v1 = Extractor(random_state_dict("v1"), device="cpu", warmup=False)
    v6 = Extractor(random_state_dict("v6"), device="cpu", warmup=False)
    assert v1.config.descriptor_sampling == "legacy"
    assert v6.config.descriptor_sampling == "cell"
    for extractor in (v1, v6):
        assert (extractor.config.detection_threshold, extractor.config.nms_radius, extractor.config.remove_borders) == (
            0.005, 4, 4)
