"""No keypoints from nothing: flat areas (uniform gray, pure black, the zero area outside a warp)
give no keypoints with the shipped SuperPoint weights (the default and its rotation-invariant
variant) and their default settings."""

from __future__ import annotations

import numpy as np
import pytest

from superpoint_training import Extractor


@pytest.fixture(scope="module", params=["default", "superpoint_ros_rotation"])
def shipped_extractor(request):
    return Extractor(request.param, device="cpu", warmup=False, backend="torch", precision="fp32")


@pytest.mark.parametrize("value", [0, 1, 128, 255])
def test_uniform_images_give_no_keypoints(shipped_extractor, value):
    features = shipped_extractor(np.full((240, 320), value, np.uint8)).numpy()
    assert len(features) <= 3, features.scores[:10]


def test_photo_inside_a_black_frame_keeps_its_keypoints_inside(shipped_extractor):
    import cv2

    skimage_data = pytest.importorskip("skimage.data")
    photo = cv2.resize(cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY), (320, 240))
    image = np.zeros((480, 640), np.uint8)  # what a warp leaves outside the image: zeros
    image[120:360, 160:480] = photo
    features = shipped_extractor(image).numpy()
    x, y = features.keypoints.T
    inside = (x >= 156) & (x < 484) & (y >= 116) & (y < 364)  # the photo and 4 px around its edge
    assert inside.sum() > 100
    assert (~inside).sum() <= 5, np.c_[features.keypoints[~inside][:10], features.scores[~inside][:10]]
