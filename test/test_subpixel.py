"""Sub-pixel keypoint refinement: the vertex of a parabola through the score map around each maximum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpoint_training import Extractor
from superpoint_training.model.keypoints import DetectionConfig, refine_keypoints, top_k_keypoints


def peak_map(centres: list[tuple[float, float]], size=(48, 64), sigma=1.2) -> torch.Tensor:
    """(1, H, W) map of Gaussian peaks at sub-pixel centres (x, y)."""
    yy, xx = torch.meshgrid(torch.arange(size[0], dtype=torch.float32),
                            torch.arange(size[1], dtype=torch.float32), indexing="ij")
    scores = torch.zeros(size)
    for x0, y0 in centres:
        scores = torch.maximum(scores, torch.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)))
    return scores[None]


@pytest.mark.parametrize(("mode", "tolerance"), [("quadratic", 0.1), ("gaussian", 0.01)])
def test_refinement_finds_sub_pixel_peaks(mode, tolerance):
    """Gaussian peaks: the parabola through the scores is close, the one through their log exact."""
    centres = [(20.3, 11.7), (40.8, 30.2), (9.5, 40.45), (55.0, 7.0)]
    scores = peak_map(centres)
    keypoints, _, valid = top_k_keypoints(scores, 0.5, len(centres))
    assert bool(valid.all())
    refined = refine_keypoints(scores, keypoints, mode)[0].numpy()
    integer = keypoints[0].numpy()
    truth = np.array(centres, np.float32)
    order = np.argsort(integer[:, 0])
    refined, integer = refined[order], integer[order]
    truth = truth[np.argsort(truth[:, 0])]
    integer_error = np.abs(integer - truth).max()
    refined_error = np.abs(refined - truth).max()
    assert integer_error >= 0.3  # the integer maxima are off by up to half a pixel
    assert refined_error < tolerance, (refined, truth)
    assert np.abs(refined - integer).max() <= 0.5  # a point never leaves its pixel
    assert np.allclose(refine_keypoints(scores, keypoints, "none"), keypoints)  # "none" is the identity


@pytest.mark.parametrize("mode", ["quadratic", "gaussian"])
def test_flat_or_edge_neighbourhoods_do_not_move_a_point(mode):
    scores = torch.zeros(1, 16, 16)
    scores[0, 8, 8] = 1.0  # isolated maximum: symmetric neighbours, no shift
    scores[0, 0, 3] = 0.9  # on the edge: mirrored neighbours, the point stays where it is
    keypoints = torch.tensor([[[8.0, 8.0], [3.0, 0.0], [12.0, 12.0]]])  # the last one sits on a plateau (zeros)
    refined = refine_keypoints(scores, keypoints, mode)
    assert torch.isfinite(refined).all()
    assert torch.allclose(refined[0, 0], keypoints[0, 0])
    assert torch.allclose(refined[0, 1], keypoints[0, 1])
    assert torch.allclose(refined[0, 2], keypoints[0, 2])


def test_extractor_option_refines_and_checks_its_value(photo_gray):
    # one scale: the coarser levels of the default weights' pyramid map back to non-integer positions
    plain = Extractor("default", device="cpu", warmup=False, subpixel="none", scales=(1.0,))
    refined = Extractor("default", device="cpu", warmup=False, subpixel="gaussian", scales=(1.0,))
    a, b = plain(photo_gray).numpy(), refined(photo_gray).numpy()
    assert len(a) == len(b) > 20
    assert np.array_equal(a.keypoints, np.round(a.keypoints))
    assert not np.array_equal(b.keypoints, np.round(b.keypoints))  # at least one point moved
    assert np.abs(b.keypoints - a.keypoints).max() <= 0.5  # same points, same order (scores unchanged)
    with pytest.raises(ValueError, match="subpixel"):
        refined.configure(subpixel="bicubic")
    with pytest.raises(ValueError, match="subpixel"):
        DetectionConfig(subpixel="soft")
