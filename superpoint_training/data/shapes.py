"""Synthetic Shapes: simple geometric images whose corners are known exactly (MagicPoint's training data).

Each image is drawn large (default 960x1280) on a random blob background, Gaussian-blurred and
resized to the training size (reference: 120x160). The primitives and their corner rules, and all
numeric parameters, follow rpautrat/SuperPoint (``datasets/synthetic_dataset.py`` and
``datasets/synthetic_shapes.py``, MIT); the code is our own.

Deliberate differences from the reference, all small:

- Randomness comes from one ``numpy.random.Generator`` per image seeded by ``seed``, so an image is
  reproducible on its own (the reference draws from a process-wide state, and a few draws from the
  unseeded global one).
- Keypoints are scaled to the small image with the pixel-centre convention
  ``(p + 0.5) * scale - 0.5`` (the reference uses ``p * scale``, a 0.44 px shift at scale 1/8).
- Polygons drop corners with an angle of at least 2*pi/3 until none is left (the reference checks once),
  multiple polygons test overlap exactly (no crossing edges, no vertex inside another polygon) and
  fill each polygon with a textured background drawn only over its bounding box (same density).
- Checkerboard and stripes warp about the image centre in (x, y) (the reference swaps x and y there).

The dataset built from them (config, cache, torch Dataset) is :mod:`.shapes_dataset`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

PRIMITIVES: tuple[str, ...] = (
    "draw_lines",
    "draw_polygon",
    "draw_multiple_polygons",
    "draw_ellipses",
    "draw_star",
    "draw_checkerboard",
    "draw_stripes",
    "draw_cube",
    "gaussian_noise",
)

# Reference values: synthetic_dataset.py function defaults, overridden by synthetic_shapes.py's
# default_config['generation']['params'] (background, stripes, multiple polygons).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "generate_background": {
        "nb_blobs": 100,
        "min_rad_ratio": 0.02,
        "max_rad_ratio": 0.031,
        "min_kernel_size": 150,
        "max_kernel_size": 500,
    },
    "draw_lines": {"nb_lines": 10},
    "draw_polygon": {"max_sides": 8},
    "draw_multiple_polygons": {"max_sides": 8, "nb_polygons": 30, "kernel_boundaries": [50, 100]},
    "draw_ellipses": {"nb_ellipses": 20},
    "draw_star": {"nb_branches": 6},
    "draw_checkerboard": {"max_rows": 7, "max_cols": 7, "transform_params": [0.05, 0.15]},
    "draw_stripes": {"max_nb_cols": 13, "min_width_ratio": 0.04, "transform_params": [0.1, 0.1]},
    "draw_cube": {
        "min_size_ratio": 0.2,
        "min_angle_rot": math.pi / 10,
        "scale_interval": [0.4, 0.6],
        "trans_interval": [0.5, 0.2],
    },
    "gaussian_noise": {},
}

DEFAULT_IMAGE_SIZE = (960, 1280)  # (H, W) at which shapes are drawn
DEFAULT_RESIZE = (120, 160)  # (H, W) of the stored images (magic-point_shapes.yaml)
DEFAULT_BLUR_SIZE = 21  # Gaussian kernel applied before resizing (magic-point_shapes.yaml)


# --------------------------------------------------------------------------------------------------
# Small helpers


def _randint(rng: np.random.Generator, low: float, high: float) -> int:
    """An int in [low, high) like ``numpy.random.randint`` with float bounds (high at least low + 1)."""
    low, high = int(low), int(high)
    return int(rng.integers(low, max(high, low + 1)))


def _thickness(rng: np.random.Generator, low: float, high: float) -> int:
    """A line thickness in [low, high), at least 1 (small drawing sizes)."""
    return max(1, _randint(rng, low, high))


def random_color(rng: np.random.Generator, background: int) -> int:
    """A gray level at least 30 away from ``background`` (shifted by 128 when too close)."""
    color = int(rng.integers(256))
    if abs(color - background) < 30:
        color = (color + 128) % 256
    return color


def _different_color(rng: np.random.Generator, previous: list[int], min_dist: int = 50, max_count: int = 20) -> int:
    """A gray level at least ``min_dist`` from each of ``previous`` (gives up after ``max_count`` tries)."""
    color = int(rng.integers(256))
    for _ in range(max_count):
        if not previous or np.all(np.abs(np.asarray(previous) - color) >= min_dist):
            break
        color = int(rng.integers(256))
    return color


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """Whether any segment p1[i]p2[i] properly crosses any segment q1[j]q2[j] (arrays (N, 2), (M, 2))."""
    if len(p1) == 0 or len(q1) == 0:
        return False
    p1, p2 = p1[:, None].astype(np.float64), p2[:, None].astype(np.float64)
    q1, q2 = q1[None].astype(np.float64), q2[None].astype(np.float64)

    def orient(a, b, c):
        return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return bool(np.any((d1 * d2 < 0) & (d3 * d4 < 0)))


def _corner_angles(points: np.ndarray) -> np.ndarray:
    """Interior angle at each vertex of a closed polygon (radians)."""
    v_prev = np.roll(points, 1, axis=0) - points
    v_next = np.roll(points, -1, axis=0) - points
    cos = (v_prev * v_next).sum(1) / (np.linalg.norm(v_prev, axis=1) * np.linalg.norm(v_next, axis=1) + 1e-12)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _random_star_polygon(rng: np.random.Generator, shape: tuple[int, int], max_sides: int) -> tuple:
    """Vertices of a random polygon around a random centre (reference rule: one vertex per angular
    slice, radius between 0.4 and 1 of the circle's), with flat (>= 2*pi/3) corners removed.
    Returns (points int (N, 2) xy, centre, radius); N may be below 3."""
    h, w = shape
    num = _randint(rng, 3, max_sides)
    min_dim = min(h, w)
    rad = max(rng.random() * min_dim / 2, min_dim / 10)
    x = _randint(rng, rad, w - rad)
    y = _randint(rng, rad, h - rad)
    slices = np.linspace(0, 2 * math.pi, num + 1)
    angles = slices[:-1] + rng.random(num) * (slices[1:] - slices[:-1])
    radii = np.maximum(rng.random((num, 2)), 0.4) * rad
    points = np.stack([x + radii[:, 0] * np.cos(angles), y + radii[:, 1] * np.sin(angles)], axis=1).astype(int)
    # Drop repeated vertices, then flat corners until every corner is sharper than 2*pi/3.
    keep = np.linalg.norm(points - np.roll(points, 1, axis=0), axis=1) > 0.01
    points = points[keep]
    while len(points) >= 3:
        flat = _corner_angles(points.astype(np.float64)) >= 2 * math.pi / 3
        if not flat.any():
            break
        points = np.delete(points, int(np.argmax(flat)), axis=0)
    return points, np.array([x, y], dtype=np.float64), rad


def _perturbation_transforms(
    rng: np.random.Generator, shape: tuple[int, int], transform_params: list[float] | tuple
) -> tuple[np.ndarray, np.ndarray]:
    """A random affine and a random homography that move a square about the image centre by up to
    ``max(shape) * (a + U(0, 1) * b)`` (affine) and half that (perspective); reference rule."""
    alpha = max(shape) * (transform_params[0] + rng.random() * transform_params[1])
    centre = np.float32([shape[1] // 2, shape[0] // 2])
    half = min(shape) // 3
    square = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half,
                         [centre[0] - half, centre[1] + half]])
    moved = square + rng.uniform(-alpha, alpha, size=square.shape).astype(np.float32)
    affine = cv2.getAffineTransform(square[:3], moved[:3])
    moved = square + rng.uniform(-alpha / 2, alpha / 2, size=square.shape).astype(np.float32)
    perspective = cv2.getPerspectiveTransform(square, moved)
    return affine, perspective


def _apply_transforms(points: np.ndarray, affine: np.ndarray, perspective: np.ndarray) -> np.ndarray:
    warped = points @ affine[:, :2].T + affine[:, 2]
    warped = np.concatenate([warped, np.ones_like(warped[:, :1])], axis=1) @ perspective.T
    return (warped[:, :2] / warped[:, 2:]).astype(int)


def keep_points_inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The points (x, y) that lie inside an image of ``shape`` (H, W)."""
    points = np.asarray(points).reshape(-1, 2)
    inside = (points[:, 0] >= 0) & (points[:, 0] < shape[1]) & (points[:, 1] >= 0) & (points[:, 1] < shape[0])
    return points[inside]


def _mean(img: np.ndarray) -> int:
    """The mean gray level as an int (the reference's background colour); cv2.mean is the fast one."""
    return int(cv2.mean(img)[0])


def _uniform_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Uniform uint8 noise (``Generator.bytes`` is the fastest uniform source)."""
    return np.frombuffer(rng.bytes(shape[0] * shape[1]), np.uint8).reshape(shape).copy()


def _no_points() -> np.ndarray:
    return np.empty((0, 2), dtype=int)


# --------------------------------------------------------------------------------------------------
# Background and primitives. Each primitive draws into ``img`` (uint8, H x W) in place and returns
# its corners as integer (x, y) points of the large image.


def generate_background(
    rng: np.random.Generator,
    size: tuple[int, int],
    nb_blobs: int = 100,
    min_rad_ratio: float = 0.02,
    max_rad_ratio: float = 0.031,
    min_kernel_size: int = 150,
    max_kernel_size: int = 500,
) -> np.ndarray:
    """Thresholded noise plus ``nb_blobs`` discs, box-blurred with a random kernel (reference rule)."""
    h, w = size
    dim = max(size)
    img = _uniform_noise(rng, size)
    cv2.threshold(img, int(rng.integers(256)), 255, cv2.THRESH_BINARY, dst=img)
    background = _mean(img)
    xs, ys = rng.integers(0, w, nb_blobs), rng.integers(0, h, nb_blobs)
    for x, y in zip(xs, ys, strict=True):
        radius = _randint(rng, dim * min_rad_ratio, dim * max_rad_ratio)
        cv2.circle(img, (int(x), int(y)), radius, random_color(rng, background), -1)
    kernel = _randint(rng, min_kernel_size, max_kernel_size)
    return cv2.blur(img, (kernel, kernel))


def _textured_fill(rng: np.random.Generator, shape: tuple[int, int], background: int,
                   density: float, kernel_boundaries) -> np.ndarray:
    """Blobs of random colours blurred together: the texture of a filled polygon."""
    h, w = shape
    img = np.full(shape, random_color(rng, background), np.uint8)
    count = max(1, int(round(density * h * w)))
    xs, ys = rng.integers(0, w, count), rng.integers(0, h, count)
    for x, y in zip(xs, ys, strict=True):
        cv2.circle(img, (int(x), int(y)), int(rng.integers(20)), random_color(rng, background), -1)
    kernel = _randint(rng, *kernel_boundaries)
    return cv2.blur(img, (kernel, kernel))


def draw_lines(img: np.ndarray, rng: np.random.Generator, nb_lines: int = 10) -> np.ndarray:
    """Up to ``nb_lines - 1`` segments that do not cross; corners are the endpoints."""
    h, w = img.shape
    background = _mean(img)
    min_dim = min(h, w)
    starts, ends = np.empty((0, 2), int), np.empty((0, 2), int)
    for _ in range(_randint(rng, 1, nb_lines)):
        p1 = np.array([[rng.integers(w), rng.integers(h)]])
        p2 = np.array([[rng.integers(w), rng.integers(h)]])
        if _segments_cross(starts, ends, p1, p2):
            continue
        starts, ends = np.concatenate([starts, p1]), np.concatenate([ends, p2])
        thickness = _thickness(rng, min_dim * 0.01, min_dim * 0.02)
        cv2.line(img, tuple(map(int, p1[0])), tuple(map(int, p2[0])), random_color(rng, background), thickness)
    return np.stack([starts, ends], axis=1).reshape(-1, 2)


def draw_polygon(img: np.ndarray, rng: np.random.Generator, max_sides: int = 8) -> np.ndarray:
    """One filled polygon with 3 to ``max_sides - 1`` vertices; corners are its non-flat vertices."""
    while True:
        points, _, _ = _random_star_polygon(rng, img.shape, max_sides)
        if len(points) >= 3:
            break
    cv2.fillPoly(img, [points.reshape(-1, 1, 2).astype(np.int32)], random_color(rng, _mean(img)))
    return points


def draw_multiple_polygons(
    img: np.ndarray,
    rng: np.random.Generator,
    max_sides: int = 8,
    nb_polygons: int = 30,
    kernel_boundaries: tuple[int, int] | list[int] = (50, 100),
) -> np.ndarray:
    """Up to ``nb_polygons`` non-overlapping polygons with textured fills; corners are their vertices."""
    h, w = img.shape
    background = _mean(img)
    density = 3000 / (h * w)  # the reference draws 3000 blobs over the whole image
    polygons: list[np.ndarray] = []
    starts, ends = np.empty((0, 2), int), np.empty((0, 2), int)
    for _ in range(nb_polygons):
        points, _, _ = _random_star_polygon(rng, img.shape, max_sides)
        if len(points) < 3:
            continue
        new_starts, new_ends = points, np.roll(points, -1, axis=0)
        if _segments_cross(starts, ends, new_starts, new_ends):
            continue
        contour = points.reshape(-1, 1, 2).astype(np.int32)
        if any(
            cv2.pointPolygonTest(other.reshape(-1, 1, 2).astype(np.int32), (float(points[0, 0]), float(points[0, 1])),
                                 False) >= 0
            or cv2.pointPolygonTest(contour, (float(other[0, 0]), float(other[0, 1])), False) >= 0
            for other in polygons
        ):
            continue  # one polygon inside the other
        polygons.append(points)
        starts, ends = np.concatenate([starts, new_starts]), np.concatenate([ends, new_ends])
        x0, y0 = points.min(0)
        x1, y1 = points.max(0) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        fill = _textured_fill(rng, (y1 - y0, x1 - x0), background, density, kernel_boundaries)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [contour - np.array([x0, y0], np.int32)], 255)
        region = img[y0:y1, x0:x1]
        region[mask > 0] = fill[mask > 0]
    return np.concatenate(polygons) if polygons else _no_points()


def draw_ellipses(img: np.ndarray, rng: np.random.Generator, nb_ellipses: int = 20) -> np.ndarray:
    """Up to ``nb_ellipses`` filled ellipses that do not overlap; no corners."""
    h, w = img.shape
    background = _mean(img)
    min_dim = min(h, w) / 4
    centres, radii = np.empty((0, 2)), np.empty(0)
    for _ in range(nb_ellipses):
        ax = int(max(rng.random() * min_dim, min_dim / 5))
        ay = int(max(rng.random() * min_dim, min_dim / 5))
        max_rad = max(ax, ay)
        x, y = _randint(rng, max_rad, w - max_rad), _randint(rng, max_rad, h - max_rad)
        if np.any(max_rad > np.linalg.norm(centres - [x, y], axis=1) - radii):
            continue
        centres, radii = np.concatenate([centres, [[x, y]]]), np.append(radii, max_rad)
        color, angle = random_color(rng, background), rng.random() * 90
        cv2.ellipse(img, (x, y), (ax, ay), angle, 0, 360, color, -1)
    return _no_points()


def draw_star(img: np.ndarray, rng: np.random.Generator, nb_branches: int = 6) -> np.ndarray:
    """3 to ``nb_branches - 1`` segments from a common centre; corners are the centre and the tips."""
    h, w = img.shape
    num = _randint(rng, 3, nb_branches)
    min_dim = min(h, w)
    thickness = _thickness(rng, min_dim * 0.01, min_dim * 0.02)
    rad = max(rng.random() * min_dim / 2, min_dim / 5)
    x, y = _randint(rng, rad, w - rad), _randint(rng, rad, h - rad)
    slices = np.linspace(0, 2 * math.pi, num + 1)
    angles = slices[:-1] + rng.random(num) * (slices[1:] - slices[:-1])
    radii = np.maximum(rng.random((num, 2)), 0.3) * rad
    tips = np.stack([x + radii[:, 0] * np.cos(angles), y + radii[:, 1] * np.sin(angles)], axis=1).astype(int)
    background = _mean(img)
    for tip in tips:
        cv2.line(img, (x, y), (int(tip[0]), int(tip[1])), random_color(rng, background), thickness)
    return np.concatenate([[[x, y]], tips])


def draw_checkerboard(
    img: np.ndarray,
    rng: np.random.Generator,
    max_rows: int = 7,
    max_cols: int = 7,
    transform_params: tuple[float, float] | list[float] = (0.05, 0.15),
) -> np.ndarray:
    """A checkerboard of 3 to ``max_rows - 1`` by 3 to ``max_cols - 1`` cells under a random affine
    and perspective warp, with random lines along its edges; corners are the grid points in view."""
    h, w = img.shape
    background = _mean(img)
    rows, cols = _randint(rng, 3, max_rows), _randint(rng, 3, max_cols)
    cell = min((w - 1) // cols, (h - 1) // rows)
    gx, gy = np.meshgrid(np.arange(cols + 1), np.arange(rows + 1))
    grid = cell * np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
    affine, perspective = _perturbation_transforms(rng, img.shape, transform_params)
    points = _apply_transforms(grid, affine, perspective)

    def vertex(i: int, j: int) -> tuple[int, int]:
        return int(points[i * (cols + 1) + j, 0]), int(points[i * (cols + 1) + j, 1])

    colors = np.zeros((rows, cols), np.int64)
    for i in range(rows):
        for j in range(cols):
            neighbours = ([int(colors[i - 1, j])] if i else []) + ([int(colors[i, j - 1])] if j else [])
            colors[i, j] = _different_color(rng, neighbours) if neighbours else random_color(rng, background)
            quad = np.array([vertex(i, j), vertex(i, j + 1), vertex(i + 1, j + 1), vertex(i + 1, j)], np.int32)
            cv2.fillConvexPoly(img, quad, int(colors[i, j]))

    min_dim = min(h, w)
    nb_row_lines, nb_col_lines = _randint(rng, 2, rows + 2), _randint(rng, 2, cols + 2)
    thickness = _thickness(rng, min_dim * 0.01, min_dim * 0.015)
    for _ in range(nb_row_lines):
        i, j1, j2 = rng.integers(rows + 1), rng.integers(cols + 1), rng.integers(cols + 1)
        cv2.line(img, vertex(i, j1), vertex(i, j2), random_color(rng, background), thickness)
    for _ in range(nb_col_lines):
        j, i1, i2 = rng.integers(cols + 1), rng.integers(rows + 1), rng.integers(rows + 1)
        cv2.line(img, vertex(i1, j), vertex(i2, j), random_color(rng, background), thickness)
    return keep_points_inside(points, img.shape)


def draw_stripes(
    img: np.ndarray,
    rng: np.random.Generator,
    max_nb_cols: int = 13,
    min_width_ratio: float = 0.04,
    transform_params: tuple[float, float] | list[float] = (0.05, 0.15),
) -> np.ndarray:
    """Vertical stripes on a board larger than the image, warped like the checkerboard, with random
    lines on their boundaries; corners are the stripes' end points in view."""
    h, w = img.shape
    background = _mean(img)
    board_h, board_w = int(h * (1 + rng.random())), int(w * (1 + rng.random()))
    num = _randint(rng, 5, max_nb_cols)
    cols = np.unique(np.concatenate([board_w * rng.random(num - 1), [0, board_w - 1]]).astype(int))
    min_dim = min(h, w)
    min_width = min_dim * min_width_ratio
    cols = cols[np.diff(np.append(cols, board_w + min_width)) >= min_width]
    num = len(cols) - 1
    top = np.stack([cols, np.zeros_like(cols)], axis=1)
    bottom = np.stack([cols, np.full_like(cols, board_h - 1)], axis=1)
    affine, perspective = _perturbation_transforms(rng, img.shape, transform_params)
    points = _apply_transforms(np.concatenate([top, bottom]).astype(np.float64), affine, perspective)

    def p(k: int) -> tuple[int, int]:
        return int(points[k, 0]), int(points[k, 1])

    color = random_color(rng, background)
    for i in range(num):
        color = (color + 128 + _randint(rng, -30, 30)) % 256
        quad = np.array([p(i), p(i + 1), p(i + num + 2), p(i + num + 1)], np.int32)
        cv2.fillConvexPoly(img, quad, int(color))

    nb_row_lines, nb_col_lines = _randint(rng, 2, 5), _randint(rng, 2, num + 2)
    thickness = _thickness(rng, min_dim * 0.01, min_dim * 0.015)
    for _ in range(nb_row_lines):
        row = int(rng.choice([0, num + 1]))
        c1, c2 = rng.integers(num + 1), rng.integers(num + 1)
        cv2.line(img, p(row + c1), p(row + c2), random_color(rng, background), thickness)
    for _ in range(nb_col_lines):
        c = int(rng.integers(num + 1))
        cv2.line(img, p(c), p(c + num + 1), random_color(rng, background), thickness)
    return keep_points_inside(points, img.shape)


def draw_cube(
    img: np.ndarray,
    rng: np.random.Generator,
    min_size_ratio: float = 0.2,
    min_angle_rot: float = math.pi / 10,
    scale_interval: tuple[float, float] | list[float] = (0.4, 0.6),
    trans_interval: tuple[float, float] | list[float] = (0.5, 0.2),
) -> np.ndarray:
    """The orthographic projection of a rotated box with its three visible faces filled and edges
    drawn; corners are the 7 visible vertices in view (vertex 0 is hidden by construction)."""
    h, w = img.shape
    background = _mean(img)
    min_dim = min(h, w)
    min_side = min_dim * min_size_ratio
    lx, ly, lz = min_side + rng.random(3) * 2 * min_dim / 3
    # Vertex k has bits (x, y, z); adjacent vertices differ by one bit.
    cube = np.array([[x, y, z] for z in (0, lz) for y in (0, ly) for x in (0, lx)])
    a = rng.random(3) * 3 * min_angle_rot + min_angle_rot
    rot_z = np.array([[math.cos(a[0]), -math.sin(a[0]), 0], [math.sin(a[0]), math.cos(a[0]), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, math.cos(a[1]), -math.sin(a[1])], [0, math.sin(a[1]), math.cos(a[1])]])
    rot_y = np.array([[math.cos(a[2]), 0, -math.sin(a[2])], [0, 1, 0], [math.sin(a[2]), 0, math.cos(a[2])]])
    scaling = np.diag(scale_interval[0] + rng.random(3) * scale_interval[1])
    shift_x = w * trans_interval[0] + _randint(rng, -w * trans_interval[1], w * trans_interval[1])
    shift_y = h * trans_interval[0] + _randint(rng, -h * trans_interval[1], h * trans_interval[1])
    cube = cube @ (scaling @ rot_z @ rot_x @ rot_y).T + np.array([shift_x, shift_y, 0])
    cube = cube[:, :2].astype(int)
    faces = np.array([[7, 3, 1, 5], [7, 5, 4, 6], [7, 6, 2, 3]])
    face_color = random_color(rng, background)
    for face in faces:
        cv2.fillPoly(img, [cube[face].reshape(-1, 1, 2).astype(np.int32)], face_color)
    thickness = _thickness(rng, min_dim * 0.003, min_dim * 0.015)
    for face in faces:
        for k in range(4):
            edge_color = (face_color + 128 + _randint(rng, -64, 64)) % 256
            a_pt, b_pt = cube[face[k]], cube[face[(k + 1) % 4]]
            cv2.line(img, (int(a_pt[0]), int(a_pt[1])), (int(b_pt[0]), int(b_pt[1])), int(edge_color), thickness)
    return keep_points_inside(cube[1:], img.shape)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise over the whole image (blurred later like every image); no corners."""
    img[...] = _uniform_noise(rng, img.shape)
    return _no_points()


DRAWERS: dict[str, Callable[..., np.ndarray]] = {
    "draw_lines": draw_lines,
    "draw_polygon": draw_polygon,
    "draw_multiple_polygons": draw_multiple_polygons,
    "draw_ellipses": draw_ellipses,
    "draw_star": draw_star,
    "draw_checkerboard": draw_checkerboard,
    "draw_stripes": draw_stripes,
    "draw_cube": draw_cube,
    "gaussian_noise": gaussian_noise,
}


def draw_image(
    primitive: str, seed: int, image_size: tuple[int, int], params: Mapping, resize: tuple[int, int], blur_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image: background, ``primitive``, Gaussian blur, resize; uint8 (H, W) and its corners float32 (N, 2)
    (x, y). The same arguments give the same image (``shapes_dataset.generate_image`` takes a config)."""
    if primitive not in DRAWERS:
        raise KeyError(f"unknown primitive {primitive!r} (known: {', '.join(PRIMITIVES)})")
    rng = np.random.default_rng(seed)
    image = generate_background(rng, image_size, **params["generate_background"])
    points = DRAWERS[primitive](image, rng, **params.get(primitive, {}))
    image = cv2.GaussianBlur(image, (blur_size, blur_size), 0)
    image = cv2.resize(image, (resize[1], resize[0]), interpolation=cv2.INTER_LINEAR)
    scale = np.array([resize[1] / image_size[1], resize[0] / image_size[0]])
    keypoints = (np.asarray(points, np.float64).reshape(-1, 2) + 0.5) * scale - 0.5
    rounded = np.round(keypoints)
    inside = (rounded[:, 0] >= 0) & (rounded[:, 0] < resize[1]) & (rounded[:, 1] >= 0) & (rounded[:, 1] < resize[0])
    return image, keypoints[inside].astype(np.float32)
