"""Synthetic Shapes drawing: determinism, sizes, and that the corners sit on drawn structure."""

from __future__ import annotations

import numpy as np
import pytest

from superpoint_training.data import shapes
from superpoint_training.data.shapes import PRIMITIVES
from superpoint_training.data.shapes_dataset import generate_image

# Drawn at half the reference size to keep the tests fast; same output size (120x160).
SMALL = {"generation": {"image_size": [480, 640]}, "preprocessing": {"resize": [120, 160], "blur_size": 11}}
WITH_CORNERS = [p for p in PRIMITIVES if p not in ("draw_ellipses", "gaussian_noise")]


def test_primitives_match_the_reference_list():
    assert PRIMITIVES == ("draw_lines", "draw_polygon", "draw_multiple_polygons", "draw_ellipses", "draw_star",
                          "draw_checkerboard", "draw_stripes", "draw_cube", "gaussian_noise")


@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_deterministic_per_seed(primitive):
    image, points = generate_image(primitive, 7, SMALL)
    again, points_again = generate_image(primitive, 7, SMALL)
    other, _ = generate_image(primitive, 8, SMALL)
    assert image.dtype == np.uint8 and image.shape == (120, 160)
    assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 2
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(points, points_again)
    assert not np.array_equal(image, other)


def test_default_config_is_the_reference_size():
    image, points = generate_image("draw_polygon", 0)
    assert image.shape == (120, 160)
    assert len(points) >= 3


@pytest.mark.parametrize("primitive", ["draw_ellipses", "gaussian_noise"])
def test_primitives_without_corners(primitive):
    for seed in range(3):
        _, points = generate_image(primitive, seed, SMALL)
        assert points.shape == (0, 2)


def _local_range(image: np.ndarray, point: np.ndarray, radius: int = 2) -> int:
    x, y = np.round(point).astype(int)
    window = image[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1].astype(int)
    return int(window.max() - window.min())


@pytest.mark.parametrize("primitive", WITH_CORNERS)
def test_corners_lie_on_drawn_structure(primitive):
    """Around a corner the image changes (a shape meets its surroundings); in flat areas it does not."""
    ranges, total = [], 0
    for seed in range(6):
        image, points = generate_image(primitive, seed, SMALL)
        total += len(points)
        h, w = image.shape
        assert np.all((points >= -0.5) & (points < [w - 0.5, h - 0.5])), "corners outside the image"
        ranges += [_local_range(image, p) for p in points]
    assert total > 0, f"{primitive} produced no corners in 6 images"
    ranges = np.array(ranges)
    # Blurred edges of shapes whose colour differs by at least 30 gray levels from the background mean.
    assert np.mean(ranges >= 12) >= 0.85, f"{primitive}: corners on flat areas: {np.sort(ranges)[:10]}"


def test_corners_are_more_textured_than_random_points():
    rng = np.random.default_rng(0)
    corner_ranges, random_ranges = [], []
    for seed in range(4):
        image, points = generate_image("draw_polygon", seed, SMALL)
        corner_ranges += [_local_range(image, p) for p in points]
        random_ranges += [_local_range(image, p) for p in rng.uniform([0, 0], [159, 119], size=(20, 2))]
    assert np.median(corner_ranges) > 3 * max(np.median(random_ranges), 1)


def test_polygon_corners_are_vertices_of_the_filled_shape():
    """Draw on a flat image: each corner is on the polygon's outline (inside and outside pixels around it)."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        image = np.full((240, 320), 128, np.uint8)
        points = shapes.draw_polygon(image, rng)
        assert 3 <= len(points) <= 7
        filled = image != 128
        for x, y in points:
            window = filled[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
            assert window.any() and not window.all()
        # No corner is flat: every interior angle is below 2*pi/3.
        assert np.all(shapes._corner_angles(points.astype(float)) < 2 * np.pi / 3)


def test_lines_do_not_cross():
    for seed in range(10):
        image = np.full((240, 320), 128, np.uint8)
        ends = shapes.draw_lines(image, np.random.default_rng(seed)).reshape(-1, 2, 2)
        for i in range(len(ends)):
            others = np.delete(ends, i, axis=0)
            assert not shapes._segments_cross(ends[i:i + 1, 0], ends[i:i + 1, 1], others[:, 0], others[:, 1])


def test_star_corners_are_centre_and_tips():
    image = np.full((240, 320), 128, np.uint8)
    points = shapes.draw_star(image, np.random.default_rng(3))
    assert 4 <= len(points) <= 6  # centre + 3..5 tips
    assert image[points[0, 1], points[0, 0]] != 128  # the centre is drawn


def test_unknown_primitive_is_an_error():
    with pytest.raises(KeyError, match="draw_circle"):
        generate_image("draw_circle", 0, SMALL)
