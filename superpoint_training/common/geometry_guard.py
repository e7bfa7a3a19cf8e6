"""OpenCV's geometry solvers on matched points, with degenerate input turned into a reason, never an
exception.

Matched points can be degenerate on any real frame (a wall, a still camera, a bad image): too few
of them, all the same point, all on one line, NaN from upstream. OpenCV's answer to such input
changes between releases: 4.x returns no solution where 5.1 raises ``cv2.error`` (``findEssentialMat``
on collinear points or a pure rotation: ``(-215:Assertion failed) ... solvePoly``). Every caller
(the tracker's relative pose, the evaluation's homography correctness, the matching demo) therefore
checks its points with :func:`usable_points` and calls the solver through :func:`call_opencv`, and
reports a failure with its reason the way it already reports "no solution".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

__all__ = ["usable_points", "call_opencv", "find_homography", "opencv_error_line"]

# a point set whose second singular value (centred) is below this fraction of the first lies on a line
COLLINEAR_RATIO = 1e-6


def usable_points(points0: np.ndarray, points1: np.ndarray, minimum: int) -> tuple[np.ndarray, str]:
    """Which rows of matched points (N, 2) a solver that needs ``minimum`` points may use, and why not.

    Returns the indices of the rows whose four coordinates are finite (a NaN or infinite point is
    left out, not passed on) and a reason, ``""`` when those rows can be solved: at least ``minimum``
    distinct pairs, and in neither image all on one line. Duplicated pairs are kept (they are what
    the caller matched) but only count once.
    """
    pairs = np.concatenate((np.asarray(points0, np.float64).reshape(-1, 2), np.asarray(points1, np.float64).reshape(-1, 2)), 1)
    finite = np.flatnonzero(np.isfinite(pairs).all(axis=1))
    dropped = f" ({len(pairs) - len(finite)} with NaN or infinite coordinates left out)" if len(finite) < len(pairs) else ""
    distinct = np.unique(pairs[finite], axis=0)
    if len(distinct) < minimum:
        return finite, f"{len(distinct)} distinct point pairs, the solver needs {minimum}{dropped}"
    for image, points in enumerate((distinct[:, :2], distinct[:, 2:])):
        spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
        if spread[1] <= COLLINEAR_RATIO * spread[0]:
            return finite, f"the points of image {image} are all on one line or at one point (degenerate){dropped}"
    return finite, ""


def opencv_error_line(error: cv2.error) -> str:
    """The informative line of a ``cv2.error`` message (OpenCV puts it last, after the source path)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text.split(" error: ", 1)[-1]


def call_opencv(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """``(function(*args, **kwargs), "")``, or ``(None, reason)`` when OpenCV raises ``cv2.error``."""
    try:
        return function(*args, **kwargs), ""
    except cv2.error as error:
        name = getattr(function, "__name__", "OpenCV")
        return None, f"{name} failed: {opencv_error_line(error)}"


def find_homography(
    points0: np.ndarray, points1: np.ndarray, threshold: float
) -> tuple[np.ndarray | None, np.ndarray, str]:
    """``cv2.findHomography`` with RANSAC (reprojection ``threshold`` px) on matched points (N, 2).

    Returns the estimate (None when there is none), the inlier mask over the N given rows (rows left
    out for NaN coordinates are outliers) and the reason there is no estimate (``""`` otherwise).
    With finite, non-degenerate points the call and its result are exactly OpenCV's.
    """
    points0, points1 = np.asarray(points0).reshape(-1, 2), np.asarray(points1).reshape(-1, 2)  # dtype kept: OpenCV's result
    inliers = np.zeros(len(points0), dtype=bool)
    rows, reason = usable_points(points0, points1, 4)
    if reason:
        return None, inliers, reason
    found, reason = call_opencv(cv2.findHomography, points0[rows], points1[rows], cv2.RANSAC, threshold)
    if found is None:
        return None, inliers, reason
    estimate, mask = found
    if estimate is None or not np.all(np.isfinite(estimate)):
        return None, inliers, "no homography found"
    if mask is not None:
        inliers[rows] = mask.ravel() > 0
    return estimate, inliers, ""
