"""HPatches metrics and classical baselines pinned on cases with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from superpoint_training.evaluation import baselines
from superpoint_training.evaluation.metrics import (
    average_precision,
    cross_check_matches,
    descriptor_metrics,
    homography_estimation,
    matching_score,
    repeatability,
    shared_top_k,
)

SIZE = (100, 120)  # (H, W)


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1]])


def grid_points(spacing: int = 20, margin: int = 10) -> np.ndarray:
    xs, ys = np.meshgrid(
        np.arange(margin, SIZE[1] - margin + 1, spacing), np.arange(margin, SIZE[0] - margin + 1, spacing)
    )
    return np.stack((xs.ravel(), ys.ravel()), axis=1).astype(np.float64)


def unit_descriptors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_identity_warp_gives_perfect_scores():
    points = grid_points()
    scores = np.linspace(1, 0.5, len(points))
    rep = repeatability(points, scores, points, scores, np.eye(3), SIZE, SIZE, k=300)
    assert rep["repeatability"] == 1.0 and rep["localization_error"] == 0.0
    desc = unit_descriptors(len(points))
    result = descriptor_metrics(points, scores, desc, points, scores, desc, np.eye(3), SIZE, SIZE, norm="unit")
    assert result["correct_e1"] == result["correct_e3"] == result["correct_e5"] == 1.0
    assert result["corner_error"] < 1e-6
    assert result["matching_score"] == 1.0 and result["nn_map"] == 1.0
    assert result["n_matches"] == len(points)


def test_pure_translation_and_shared_view():
    points0 = grid_points()
    H = translation(30.0, 0.0)
    points1 = points0 + (30.0, 0.0)
    inside1 = points1[:, 0] < SIZE[1]
    # points of image 1 whose inverse warp leaves image 0 do not count either
    points1 = np.concatenate((points1[inside1], [[5.0, 50.0]]))
    scores0, scores1 = np.ones(len(points0)), np.ones(len(points1))
    rep = repeatability(points0, scores0, points1, scores1, H, SIZE, SIZE, k=None)
    assert rep["n0"] == inside1.sum() == rep["n1"]
    assert rep["repeatability"] == 1.0
    # a one-pixel shift of every detection in image 1: still repeatable, localisation error exactly 1
    rep = repeatability(points0, scores0, points1 + (0.6, 0.8), scores1, H, SIZE, SIZE, k=None)
    assert rep["repeatability"] == 1.0 and rep["localization_error"] == pytest.approx(1.0)


def test_detector_returning_the_same_points_in_both_images():
    """A detector blind to the content: repeatable only while the motion stays under the threshold."""
    points = grid_points(spacing=20)
    scores = np.ones(len(points))
    small = repeatability(points, scores, points, scores, translation(2.0, 0.0), SIZE, SIZE, k=None)
    assert small["repeatability"] == 1.0 and small["localization_error"] == pytest.approx(2.0)
    large = repeatability(points, scores, points, scores, translation(5.0, 5.0), SIZE, SIZE, k=None)
    assert large["repeatability"] == 0.0 and np.isnan(large["localization_error"])


def test_top_k_keeps_the_best_points_in_the_shared_view():
    points = np.array([[10.0, 10.0], [110.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    scores = np.array([0.5, 0.9, 0.7, 0.1])
    # the best point (0.9) leaves the other image under a shift of 20 px
    assert shared_top_k(points, scores, translation(20, 0), SIZE, k=2).tolist() == [2, 0]
    assert shared_top_k(np.zeros((0, 2)), np.zeros(0), np.eye(3), SIZE, k=2).tolist() == []


def test_no_points_gives_nan_not_a_crash():
    empty = np.zeros((0, 2))
    rep = repeatability(empty, np.zeros(0), empty, np.zeros(0), np.eye(3), SIZE, SIZE)
    assert np.isnan(rep["repeatability"])
    points = grid_points()
    rep = repeatability(points, np.ones(len(points)), empty, np.zeros(0), np.eye(3), SIZE, SIZE)
    assert rep["repeatability"] == 0.0


def test_known_mismatch_fraction():
    """80 of 100 descriptors agree; the other 20 are swapped in pairs and matched first (closer)."""
    points = grid_points(spacing=10, margin=5)[:100]
    n = len(points)
    desc0 = unit_descriptors(n, seed=1)
    desc1 = desc0.copy()
    swapped = np.arange(n - 20, n)
    desc1[swapped] = desc0[swapped.reshape(-1, 2)[:, ::-1].ravel()]
    # make the correct matches slightly farther than the wrong (exact) ones so that the ranking is known
    noise = unit_descriptors(n - 20, seed=2) * 0.05
    desc1[: n - 20] = desc1[: n - 20] + noise
    desc1 /= np.linalg.norm(desc1, axis=1, keepdims=True)
    scores = np.ones(n)
    result = descriptor_metrics(points, scores, desc0, points, scores, desc1, np.eye(3), SIZE, SIZE, norm="unit")
    assert result["n_matches"] == n and result["n_correct"] == n - 20
    assert result["matching_score"] == pytest.approx(0.8)
    ranks = np.arange(21, n + 1)
    assert result["nn_map"] == pytest.approx(np.mean((ranks - 20) / ranks))
    assert result["correct_e1"] == 1.0  # RANSAC rejects the 20% of wrong matches


def test_matching_score_and_average_precision_definitions():
    assert matching_score(30, 100, 50) == pytest.approx(0.4)
    assert np.isnan(matching_score(0, 0, 0))
    # ranked: correct, wrong, correct -> (1/1 + 2/3) / 2
    assert average_precision(np.array([0.1, 0.2, 0.3]), np.array([True, False, True])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.1]), np.array([False])) == 0.0
    assert np.isnan(average_precision(np.zeros(0), np.zeros(0, bool)))


def test_homography_estimation_corner_error_thresholds():
    rng = np.random.default_rng(0)
    points = rng.uniform((0, 0), (SIZE[1], SIZE[0]), size=(50, 2))
    matches = np.stack((np.arange(50), np.arange(50)), axis=1)
    # the matches say "shifted by 2 px" while the truth is the identity: corner error exactly 2
    result = homography_estimation(points, points + (2.0, 0.0), matches, np.eye(3), SIZE)
    assert result["corner_error"] == pytest.approx(2.0, abs=1e-6)
    assert (result["correct_e1"], result["correct_e3"], result["correct_e5"]) == (0.0, 1.0, 1.0)
    few = homography_estimation(points, points, matches[:3], np.eye(3), SIZE)
    assert few["corner_error"] == float("inf") and few["correct_e5"] == 0.0


def test_ransac_orders_average_correctness_over_shuffled_matches(monkeypatch):
    """OpenCV's RANSAC draws from a fixed seed, so the order of the matches picks its samples: a fake
    estimator that is right only when the matches' first point comes first shows the averaging."""

    rng = np.random.default_rng(0)
    points = rng.uniform((0, 0), (SIZE[1], SIZE[0]), size=(20, 2))
    matches = np.stack((np.arange(20), np.arange(20)), axis=1)

    def order_dependent(src, dst, method, threshold):
        right = np.allclose(src[0], points[0])
        return (np.eye(3) if right else translation(10.0, 0.0)), np.ones((len(src), 1), np.uint8)

    monkeypatch.setattr(cv2, "findHomography", order_dependent)
    single = homography_estimation(points, points, matches, np.eye(3), SIZE)
    assert single["correct_e3"] == 1.0 and single["corner_error"] == 0.0
    orders = 8
    first_kept = [np.random.default_rng(seed).permutation(20)[0] == 0 for seed in range(1, orders)]
    averaged = homography_estimation(points, points, matches, np.eye(3), SIZE, orders=orders)
    assert averaged["correct_e3"] == pytest.approx((1 + sum(first_kept)) / orders)
    assert 0 < averaged["correct_e3"] < 1
    assert averaged["corner_error"] == 0.0  # the corner error stays the matches' own order's


@pytest.mark.parametrize("norm", ["l2", "hamming"])
def test_cross_check_matches_opencv_norms(norm):
    rng = np.random.default_rng(0)
    if norm == "hamming":
        desc = rng.integers(0, 256, size=(40, 32), dtype=np.uint8)
    else:
        desc = rng.uniform(0, 100, size=(40, 128)).astype(np.float32)
    order = rng.permutation(40)
    matches, distances = cross_check_matches(desc, desc[order], norm)
    assert len(matches) == 40 and np.all(order[matches[:, 1]] == matches[:, 0])
    assert np.allclose(distances, 0, atol=1e-3)
    assert len(cross_check_matches(desc[:0], desc, norm)[0]) == 0
    # unrelated descriptors: the same matches and distances as the reference's OpenCV matcher
    other = rng.integers(0, 256, size=(60, 32), dtype=np.uint8) if norm == "hamming" else desc[:30] + 20
    if norm == "l2":
        other = np.concatenate((other, rng.uniform(0, 100, size=(30, 128)).astype(np.float32)))
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING if norm == "hamming" else cv2.NORM_L2, crossCheck=True)
    expected = sorted((m.queryIdx, m.trainIdx, m.distance) for m in matcher.match(desc, other))
    matches, distances = cross_check_matches(desc, other, norm)
    assert [(i, j) for i, j, _ in expected] == sorted(map(tuple, matches.tolist()))
    order = np.lexsort((matches[:, 1], matches[:, 0]))
    assert np.allclose([d for *_, d in expected], distances[order], rtol=1e-5)


@pytest.mark.parametrize("method", baselines.METHODS)
def test_baselines_on_a_photo(photo_gray, method):
    features = baselines.extract(photo_gray, method, nms_radius=4, max_keypoints=300)
    n = len(features.keypoints)
    assert 50 <= n <= 300
    assert np.all(np.diff(features.scores) <= 0)
    assert np.all((features.keypoints >= 0) & (features.keypoints < (320, 240)))
    if method in baselines.DESCRIPTORS:
        assert features.descriptors.shape == (n, 128 if method == "sift" else 32)
        assert features.descriptors.dtype == (np.float32 if method == "sift" else np.uint8)
    else:
        assert features.descriptors is None


@pytest.mark.parametrize("method", ["harris", "fast", "shi"])
def test_classical_detectors_are_repeatable_under_translation(photo_gray, method):
    """Crops of one photo 7 px apart: a real detector finds most points again."""
    image0, image1 = photo_gray[:, :300], np.ascontiguousarray(photo_gray[:, 7:307])
    f0 = baselines.extract(np.ascontiguousarray(image0), method, nms_radius=4)
    f1 = baselines.extract(image1, method, nms_radius=4)
    rep = repeatability(f0.keypoints, f0.scores, f1.keypoints, f1.scores, translation(-7, 0), (240, 300), (240, 300))
    assert rep["repeatability"] > 0.8


def test_baselines_reject_bad_input(photo_rgb):
    with pytest.raises(ValueError, match="gray uint8"):
        baselines.extract(photo_rgb, "harris")
    with pytest.raises(ValueError, match="unknown"):
        baselines.extract(np.zeros((32, 32), np.uint8), "surf")
