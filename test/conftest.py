"""Shared fixtures: real photos from scikit-image, random weights of each published layout."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def one_thread():
    """One torch thread: on a few shared cores, two threads on tiny images are several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def photo_gray() -> np.ndarray:
    """A real photo (scikit-image's CC0 astronaut), gray uint8 240x320."""
    import cv2
    from skimage import data

    rgb = data.astronaut()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (320, 240), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def photo_rgb() -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.coffee(), (320, 240), interpolation=cv2.INTER_AREA)


@pytest.fixture
def rectangles(monkeypatch):
    """The trainer knows the stand-in dataset ``rectangles`` (test/train_standin.py)."""
    from train_standin import Rectangles

    from superpoint_training.training.trainer import DATASETS

    monkeypatch.setitem(DATASETS, "rectangles", Rectangles)
