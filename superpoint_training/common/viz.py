"""Pictures a person looks at: keypoints on an image, matches between two images."""

from __future__ import annotations

import sys

import cv2
import numpy as np

from ..data.images import to_rgb

GREEN = (40, 200, 40)
RED = (230, 40, 40)
YELLOW = (250, 210, 0)


def import_pyplot(purpose: str | None = None):
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed).

    matplotlib is optional (``pip install .[training]`` brings it, a plain ``pip install .`` does
    not). When it is missing and a ``purpose`` is given, print one line saying what is skipped and
    return None, so that a command which has already written its results finishes; without a
    ``purpose``, raise ImportError with the install command.
    """
    try:
        import matplotlib
    except ImportError:
        if purpose is None:
            raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
        print(f"skipped {purpose}: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, color=YELLOW, radius: int = 2) -> np.ndarray:
    """Keypoints (N, 2) drawn as small circles on an RGB copy of ``image``."""
    canvas = to_rgb(image)
    for x, y in np.round(keypoints).astype(int):
        cv2.circle(canvas, (int(x), int(y)), radius, color, -1, cv2.LINE_AA)
    return canvas


def draw_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    keypoints0: np.ndarray,
    keypoints1: np.ndarray,
    matches: np.ndarray,
    inliers: np.ndarray | None = None,
    title: str = "",
    max_lines: int = 300,
    legend: tuple[str, str] | None = None,
) -> np.ndarray:
    """Side-by-side RGB picture: all keypoints, match lines (green inliers, red outliers), a title bar.

    ``legend``: what a green and what a red line mean, drawn under the title with a sample of each.
    """
    left = draw_keypoints(image0, keypoints0, radius=1)
    right = draw_keypoints(image1, keypoints1, radius=1)
    height = max(left.shape[0], right.shape[0])
    gap = 8
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    offset = left.shape[1] + gap
    canvas[: right.shape[0], offset:] = right
    if inliers is None:
        inliers = np.ones(len(matches), dtype=bool)
    order = np.random.default_rng(0).permutation(len(matches))[:max_lines]
    for i in order:
        p0 = keypoints0[matches[i, 0]]
        p1 = keypoints1[matches[i, 1]]
        color = GREEN if inliers[i] else RED
        cv2.line(canvas, (round(p0[0]), round(p0[1])), (round(p1[0]) + offset, round(p1[1])), color, 1, cv2.LINE_AA)
    bars = []
    if title:
        bar = np.full((28, canvas.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        bars.append(bar)
    if legend:
        bars.append(legend_bar(canvas.shape[1], ((GREEN, legend[0]), (RED, legend[1]))))
    return np.vstack((*bars, canvas))


def legend_bar(width: int, entries, height: int = 24) -> np.ndarray:
    """A white RGB strip with, for each (colour, text) entry, a short line of that colour and its text."""
    bar = np.full((height, width, 3), 255, np.uint8)
    x = 6
    for color, text in entries:
        cv2.line(bar, (x, height // 2), (x + 24, height // 2), color, 3, cv2.LINE_AA)
        x += 30
        cv2.putText(bar, text, (x, height // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        x += text_width + 20
    return bar


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Stack pictures vertically, padding narrower ones with white."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.vstack(padded)


def save_rgb(path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
