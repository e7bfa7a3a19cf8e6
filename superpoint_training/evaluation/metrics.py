"""Metrics of keypoint detectors and descriptors on image pairs related by a known homography.

Definitions follow rpautrat's ``evaluations/detector_evaluation.py`` and
``descriptor_evaluation.py`` (repeatability, homography correctness), the SuperPoint paper
(localisation error on HPatches) and common use (matching score, nearest-neighbour mAP). Every
function takes (x, y) pixel keypoints sorted or not, their scores, and H mapping image 0 to image 1.

Shared view: a point of image 0 is in it when H maps it inside image 1 (0 <= x < W1, 0 <= y < H1),
a point of image 1 when H^-1 maps it inside image 0; the top-k by score are kept after that filter.
"""

from __future__ import annotations

import numpy as np
import torch

from ..common.geometry_guard import find_homography
from ..data.geometry import corner_error, warp_points
from ..model.matching import match_descriptors

CORRECTNESS_THRESHOLDS = (1, 3, 5)
NORMS = ("unit", "l2", "hamming")


def inside(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Mask of (x, y) points with 0 <= x < W and 0 <= y < H (the reference's test)."""
    h, w = image_size
    return (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)


def shared_top_k(
    keypoints: np.ndarray, scores: np.ndarray, H: np.ndarray, other_size: tuple[int, int], k: int | None
) -> np.ndarray:
    """Indices of the ``k`` best-scored keypoints whose warp by ``H`` lies in the other image
    (highest score first; all of them when ``k`` is None)."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    if len(keypoints) == 0:
        return np.zeros(0, dtype=np.int64)
    keep = np.flatnonzero(inside(warp_points(keypoints, H), other_size))
    order = keep[np.argsort(-np.asarray(scores)[keep], kind="stable")]
    return order if k is None else order[:k]


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each row of a to its nearest row of b, and from each row of b to a's."""
    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return distance.min(axis=1), distance.min(axis=0)


def repeatability(
    keypoints0: np.ndarray,
    scores0: np.ndarray,
    keypoints1: np.ndarray,
    scores1: np.ndarray,
    H: np.ndarray,
    image_size0: tuple[int, int],
    image_size1: tuple[int, int],
    k: int | None = 300,
    threshold: float = 3.0,
) -> dict[str, float]:
    """Repeatability and localisation error of one pair.

    Repeatability (rpautrat's ``compute_repeatability``): keep the top ``k`` points of each image
    in the shared view, warp those of image 0 into image 1 with H; count1 = warped points whose
    nearest point of image 1 lies within ``threshold`` px, count2 = points of image 1 whose nearest
    warped point lies within it; repeatability = (count1 + count2) / (N0 + N1). NaN when both
    images have no point in the shared view (the reference skips such pairs).

    Localisation error (the SuperPoint paper's mean localisation error on HPatches): the mean of
    those nearest-neighbour distances that are within ``threshold``, over both directions, in
    pixels of image 1. NaN when no point is repeated.
    """
    keypoints0 = np.asarray(keypoints0, dtype=np.float64).reshape(-1, 2)
    keypoints1 = np.asarray(keypoints1, dtype=np.float64).reshape(-1, 2)
    index0 = shared_top_k(keypoints0, scores0, H, image_size1, k)
    index1 = shared_top_k(keypoints1, scores1, np.linalg.inv(H), image_size0, k)
    warped0 = warp_points(keypoints0[index0], H)
    points1 = keypoints1[index1]
    n0, n1 = len(warped0), len(points1)
    result = {"n0": float(n0), "n1": float(n1), "repeatability": float("nan"), "localization_error": float("nan")}
    if n0 + n1 == 0:
        return result
    if n0 == 0 or n1 == 0:
        result["repeatability"] = 0.0
        return result
    nearest0, nearest1 = _nearest(warped0, points1)
    hits0, hits1 = nearest0[nearest0 <= threshold], nearest1[nearest1 <= threshold]
    result["repeatability"] = (len(hits0) + len(hits1)) / (n0 + n1)
    if len(hits0) + len(hits1):
        result["localization_error"] = float(np.concatenate((hits0, hits1)).mean())
    return result


def cross_check_matches(
    descriptors0: np.ndarray | torch.Tensor,
    descriptors1: np.ndarray | torch.Tensor,
    norm: str = "unit",
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force matches kept when each point is the other's nearest neighbour (cross check).

    ``norm``: ``"unit"`` for L2-normalised descriptors (SuperPoint: :func:`match_descriptors` on
    ``device``); ``"l2"`` (SIFT) and ``"hamming"`` (ORB, packed uint8 bits) give the matches of
    OpenCV's ``BFMatcher(norm, crossCheck=True)`` that the reference used, computed exactly with
    one matrix product (several times faster than OpenCV's brute force). Returns matches (K, 2)
    and their distances (K,).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if len(descriptors0) == 0 or len(descriptors1) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    if norm == "unit":
        d0 = torch.nn.functional.normalize(torch.as_tensor(descriptors0).to(device, torch.float32), dim=-1)
        d1 = torch.nn.functional.normalize(torch.as_tensor(descriptors1).to(device, torch.float32), dim=-1)
        matches, distances = match_descriptors(d0, d1, mutual=True)
        return matches.cpu().numpy(), distances.float().cpu().numpy()
    if norm == "hamming":
        bits0 = np.unpackbits(np.asarray(descriptors0, np.uint8), axis=1).astype(np.float32)
        bits1 = np.unpackbits(np.asarray(descriptors1, np.uint8), axis=1).astype(np.float32)
        # differing bits = ones(a) + ones(b) - 2 (a . b): exact small integers in float32
        distance = bits0.sum(1)[:, None] + bits1.sum(1)[None, :] - 2 * bits0 @ bits1.T
    else:
        d0, d1 = np.asarray(descriptors0, np.float64), np.asarray(descriptors1, np.float64)
        squared = (d0**2).sum(1)[:, None] + (d1**2).sum(1)[None, :] - 2 * d0 @ d1.T
        distance = np.sqrt(np.maximum(squared, 0))
    forward = distance.argmin(axis=1)
    backward = distance.argmin(axis=0)
    rows = np.flatnonzero(backward[forward] == np.arange(len(forward)))
    matches = np.stack((rows, forward[rows]), axis=1).astype(np.int64)
    return matches, distance[rows, forward[rows]].astype(np.float32)


def match_correct(
    keypoints0: np.ndarray, keypoints1: np.ndarray, matches: np.ndarray, H: np.ndarray, threshold: float = 3.0
) -> np.ndarray:
    """Mask of matches (i, j) with ||H x0_i - x1_j|| <= ``threshold`` px (in image 1)."""
    if len(matches) == 0:
        return np.zeros(0, dtype=bool)
    warped = warp_points(np.asarray(keypoints0, np.float64)[matches[:, 0]], H)
    return np.linalg.norm(warped - np.asarray(keypoints1, np.float64)[matches[:, 1]], axis=1) <= threshold


def homography_estimation(
    keypoints0: np.ndarray,
    keypoints1: np.ndarray,
    matches: np.ndarray,
    H: np.ndarray,
    image_size: tuple[int, int],
    thresholds: tuple[float, ...] = CORRECTNESS_THRESHOLDS,
    ransac_threshold: float = 3.0,
    orders: int = 1,
) -> dict:
    """Homography correctness (rpautrat's ``compute_homography``).

    ``cv2.findHomography`` with RANSAC (reprojection threshold ``ransac_threshold`` px, OpenCV's
    default 3) on the matched points; the corner error is the mean distance between the four
    corners of image 0 (of ``image_size``) warped by the estimate and by the true H; the pair is
    correct at e when that error is at most e. Fewer than four matches, or no estimate (degenerate
    matches included: :func:`~superpoint_training.common.geometry_guard.find_homography`), count as
    incorrect (infinite error). Returns corner_error, correct_e<e> (0 or 1), inliers, estimate.

    ``orders`` > 1 also runs RANSAC on the matches shuffled with seeds 1 .. orders-1: OpenCV's RANSAC
    draws from a fixed seed, so the order of the matches decides its samples, and on a set of 45
    pairs one order moves correctness by several pairs. correct_e<e> is then the fraction of the
    orders that are correct; corner_error, inliers and estimate stay those of the matches' own order.
    """
    estimate, inliers = None, np.zeros(len(matches), dtype=bool)
    errors = []
    if len(matches) >= 4:
        src = np.asarray(keypoints0, np.float64)[matches[:, 0]]
        dst = np.asarray(keypoints1, np.float64)[matches[:, 1]]
        estimate, inliers, _ = find_homography(src, dst, ransac_threshold)
        for seed in range(1, orders):
            order = np.random.default_rng(seed).permutation(len(src))
            errors.append(corner_error(find_homography(src[order], dst[order], ransac_threshold)[0], H, image_size))
    error = corner_error(estimate, H, image_size)
    errors = np.array([error, *errors]) if errors else np.full(max(1, orders), error)
    result = {"corner_error": error, "inliers": inliers, "estimate": estimate}
    result.update({f"correct_e{e:g}": float(np.mean(errors <= e)) for e in thresholds})
    return result


def matching_score(n_correct: int, n0: int, n1: int) -> float:
    """Correct matches over the mean number of points in the shared view of the two images
    (NaN when neither has a point there)."""
    total = (n0 + n1) / 2
    return float(n_correct / total) if total > 0 else float("nan")


def precision_recall(distances: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of matches ranked by ascending descriptor distance; recall counts the
    correct matches found so far over all correct matches in the list."""
    order = np.argsort(distances, kind="stable")
    hits = np.asarray(correct, bool)[order]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / max(int(hits.sum()), 1)
    return precision, recall


def average_precision(distances: np.ndarray, correct: np.ndarray) -> float:
    """Nearest-neighbour AP: the mean of the precision at the rank of each correct match when the
    cross-checked nearest-neighbour matches are ranked by descriptor distance (sklearn's
    ``average_precision_score`` with the negated distance as the score). 0 without correct
    matches, NaN without matches."""
    if len(distances) == 0:
        return float("nan")
    correct = np.asarray(correct, bool)
    if not correct.any():
        return 0.0
    precision, _ = precision_recall(distances, correct)
    return float(precision[correct[np.argsort(distances, kind="stable")]].mean())


def descriptor_metrics(
    keypoints0: np.ndarray,
    scores0: np.ndarray,
    descriptors0: np.ndarray,
    keypoints1: np.ndarray,
    scores1: np.ndarray,
    descriptors1: np.ndarray,
    H: np.ndarray,
    image_size0: tuple[int, int],
    image_size1: tuple[int, int],
    norm: str = "unit",
    k: int | None = 1000,
    device: str | torch.device = "cpu",
    match_threshold: float = 3.0,
    thresholds: tuple[float, ...] = CORRECTNESS_THRESHOLDS,
    ransac_orders: int = 1,
) -> dict:
    """All descriptor metrics of one pair: keep the top ``k`` in the shared view, cross-checked
    brute-force matching (on ``device`` for SuperPoint), then :func:`homography_estimation`, :func:`matching_score` and
    :func:`average_precision` (matches correct within ``match_threshold`` px).

    Returns the figures plus ``matches`` (indices into the given keypoints), ``distances`` and
    ``correct`` for plots.
    """
    keypoints0, keypoints1 = (np.asarray(p, np.float64).reshape(-1, 2) for p in (keypoints0, keypoints1))
    index0 = shared_top_k(keypoints0, scores0, H, image_size1, k)
    index1 = shared_top_k(keypoints1, scores1, np.linalg.inv(H), image_size0, k)
    local, distances = cross_check_matches(descriptors0[index0], descriptors1[index1], norm, device)
    matches = np.stack((index0[local[:, 0]], index1[local[:, 1]]), axis=1) if len(local) else local
    correct = match_correct(keypoints0, keypoints1, matches, H, match_threshold)
    estimation = homography_estimation(keypoints0, keypoints1, matches, H, image_size0, thresholds,
                                       orders=ransac_orders)
    return {
        "n0": float(len(index0)),
        "n1": float(len(index1)),
        "n_matches": float(len(matches)),
        "n_correct": float(correct.sum()),
        "matching_score": matching_score(int(correct.sum()), len(index0), len(index1)),
        "nn_map": average_precision(distances, correct),
        "corner_error": estimation["corner_error"],
        **{key: value for key, value in estimation.items() if key.startswith("correct_e")},
        "matches": matches,
        "distances": distances,
        "correct": correct,
        "inliers": estimation["inliers"],
    }
