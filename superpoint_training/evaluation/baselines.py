"""Classical baselines through OpenCV, with the reference's settings.

Settings from rpautrat's ``models/classical_detectors.py`` and
``classical_detectors_descriptors.py``:

- Harris: ``cv2.cornerHarris(image, blockSize=4, ksize=3, k=0.04)``, the response map as score.
- Shi-Tomasi: ``cv2.goodFeaturesToTrack(image, 600, quality, minDistance=5)``. The reference swept
  100 quality levels and scored each corner by the highest level that kept it; one call at the
  lowest level (1e-4) scored by min-eigenvalue / max (``cornerMinEigenVal``, block 3, the quality
  measure ``goodFeaturesToTrack`` thresholds) gives the same ranking without the sweep.
- FAST: ``cv2.FastFeatureDetector_create(threshold=10)`` (OpenCV's own non-max suppression on),
  the response as score.
- SIFT and ORB: ``cv2.SIFT_create(nfeatures=1500)``, ``cv2.ORB_create(nfeatures=1500)``; the
  keypoints' responses as scores; SIFT matched with L2, ORB with Hamming distance.

The three detectors then go through the same max-pool NMS as SuperPoint
(:func:`superpoint_training.model.keypoints.nms`, radius ``nms_radius``); SIFT and ORB keep the points of
their own detectors, as the reference's descriptor evaluation did.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..model.keypoints import nms

DETECTORS = ("fast", "harris", "shi")
DESCRIPTORS = ("sift", "orb")
METHODS = DETECTORS + DESCRIPTORS
NORMS = {"sift": "l2", "orb": "hamming"}
HARRIS = {"blockSize": 4, "ksize": 3, "k": 0.04}
SHI = {"maxCorners": 600, "qualityLevel": 1e-4, "minDistance": 5}
FAST_THRESHOLD = 10
N_FEATURES = 1500


@dataclass
class ClassicalFeatures:
    """keypoints (N, 2) float32 (x, y), scores (N,) float32 in descending order, descriptors or None."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray | None = None


def harris_scores(image: np.ndarray) -> np.ndarray:
    """Harris response map of a gray uint8 image (the reference's parameters)."""
    return cv2.cornerHarris(np.float32(image), **HARRIS)


def shi_scores(image: np.ndarray) -> np.ndarray:
    """Sparse Shi-Tomasi map: the corners of ``goodFeaturesToTrack`` scored by their quality."""
    scores = np.zeros(image.shape[:2], np.float32)
    corners = cv2.goodFeaturesToTrack(image, **SHI)
    if corners is None:
        return scores
    eigen = cv2.cornerMinEigenVal(image, 3)
    xy = np.rint(corners[:, 0]).astype(int)
    xy[:, 0] = xy[:, 0].clip(0, image.shape[1] - 1)
    xy[:, 1] = xy[:, 1].clip(0, image.shape[0] - 1)
    scores[xy[:, 1], xy[:, 0]] = eigen[xy[:, 1], xy[:, 0]] / max(float(eigen.max()), 1e-12)
    return scores


def fast_scores(image: np.ndarray) -> np.ndarray:
    """Sparse FAST map: each detected corner's response at its pixel."""
    scores = np.zeros(image.shape[:2], np.float32)
    for point in cv2.FastFeatureDetector_create(FAST_THRESHOLD).detect(image):
        x, y = (int(round(v)) for v in point.pt)
        scores[y, x] = max(scores[y, x], point.response)
    return scores


SCORE_MAPS = {"harris": harris_scores, "shi": shi_scores, "fast": fast_scores}


def score_map_keypoints(scores: np.ndarray, nms_radius: int, max_keypoints: int | None) -> ClassicalFeatures:
    """Max-pool NMS of a score map, then the positive scores, best first (at most ``max_keypoints``)."""
    suppressed = nms(torch.from_numpy(np.ascontiguousarray(scores, np.float32))[None], nms_radius)[0].numpy()
    y, x = np.nonzero(suppressed > 0)
    values = suppressed[y, x]
    order = np.argsort(-values, kind="stable")[:max_keypoints]
    keypoints = np.stack((x[order], y[order]), axis=1).astype(np.float32)
    return ClassicalFeatures(keypoints, values[order].astype(np.float32))


def detect_and_describe(image: np.ndarray, method: str) -> ClassicalFeatures:
    """SIFT or ORB keypoints and descriptors (float32 128-D for SIFT, packed uint8 32 bytes for ORB)."""
    if method == "sift":
        detector = cv2.SIFT_create(nfeatures=N_FEATURES)
        dim, dtype = 128, np.float32
    elif method == "orb":
        detector = cv2.ORB_create(nfeatures=N_FEATURES)
        dim, dtype = 32, np.uint8
    else:
        raise ValueError(f"unknown descriptor method {method!r}; expected one of {DESCRIPTORS}")
    points, descriptors = detector.detectAndCompute(image, None)
    if descriptors is None or not points:
        return ClassicalFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, dim), dtype))
    keypoints = np.array([p.pt for p in points], np.float32)
    scores = np.array([p.response for p in points], np.float32)
    order = np.argsort(-scores, kind="stable")
    return ClassicalFeatures(keypoints[order], scores[order], descriptors[order].astype(dtype))


def extract(image: np.ndarray, method: str, nms_radius: int = 4, max_keypoints: int | None = None) -> ClassicalFeatures:
    """Features of a gray uint8 image by a classical ``method`` (one of :data:`METHODS`)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a gray uint8 image, got shape {image.shape} and dtype {image.dtype}")
    if method in SCORE_MAPS:
        return score_map_keypoints(SCORE_MAPS[method](image), nms_radius, max_keypoints)
    features = detect_and_describe(image, method)
    if max_keypoints is not None:
        features = ClassicalFeatures(
            *(a[:max_keypoints] for a in (features.keypoints, features.scores, features.descriptors))
        )
    return features
