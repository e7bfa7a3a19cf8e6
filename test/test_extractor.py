"""Extractor inputs, outputs and bad input (issue: foundation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_same_features, random_state_dict

from superpoint_training import Extractor, match_descriptors
from superpoint_training.data.geometry import warp_points


@pytest.fixture(scope="module")
def extractor():
    return Extractor(random_state_dict("v6", seed=3), device="cpu", max_keypoints=500, warmup=False)


def test_uint8_float_gray_rgb_agree(extractor, photo_rgb):
    gray = (photo_rgb.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    from_rgb = extractor(photo_rgb).numpy()
    from_float_rgb = extractor(photo_rgb.astype(np.float32) / 255.0).numpy()
    from_gray = extractor(gray).numpy()
    assert len(from_rgb) > 50
    # the inputs differ in the last bits (numpy vs torch gray conversion): same points, ties may swap
    assert_same_features(from_float_rgb, from_rgb)
    assert_same_features(from_gray, from_rgb)
    assert from_rgb.keypoints.dtype == np.float32 and from_rgb.keypoints.shape[1] == 2
    np.testing.assert_allclose(np.linalg.norm(from_rgb.descriptors, axis=1), 1.0, atol=1e-5)


def test_list_in_list_out_with_mixed_sizes(extractor, photo_gray):
    images = [photo_gray, photo_gray[:101, :203], photo_gray]
    results = extractor(images)
    assert isinstance(results, list) and len(results) == 3
    np.testing.assert_array_equal(results[0].keypoints.numpy(), results[2].keypoints.numpy())
    assert results[1].image_size == (101, 203)
    assert results[0].keypoints.device.type == "cpu"


def test_sizes_not_multiple_of_8_give_coordinates_in_the_callers_image(extractor, photo_gray):
    image = photo_gray[:237, :315]
    features = extractor(image).numpy()
    x, y = features.keypoints.T
    assert x.max() < 315 - 4 and y.max() < 237 - 4 and x.min() >= 4 and y.min() >= 4
    # The crop of a multiple-of-8 image finds the same points away from the cropped edges.
    full = extractor(photo_gray[:240, :320]).numpy()
    inner = lambda k: {tuple(p) for p in k if p[0] < 290 and p[1] < 210}  # noqa: E731
    shared = inner(features.keypoints) & inner(full.keypoints)
    assert len(shared) >= 0.8 * len(inner(full.keypoints))


def test_translation_moves_keypoints_with_the_image(extractor, photo_gray):
    shifted = np.roll(photo_gray, (16, 24), axis=(0, 1))
    f0, f1 = (f.numpy() for f in extractor([photo_gray, shifted]))
    H = np.array([[1, 0, 24], [0, 1, 16], [0, 0, 1]], float)
    moved = {tuple(np.round(p).astype(int)) for p in warp_points(f0.keypoints, H)}
    found = {tuple(p.astype(int)) for p in f1.keypoints}
    inside = {p for p in moved if 40 <= p[0] < 300 and 30 <= p[1] < 220}
    assert len(inside & found) >= 0.9 * len(inside)


def test_fixed_keypoints_mode_pads_with_a_validity_mask(photo_gray):
    extractor = Extractor(random_state_dict("v6", seed=3), device="cpu", max_keypoints=4000,
                          fixed_keypoints=True, warmup=False)
    features = extractor(photo_gray[:64, :64])
    assert features.keypoints.shape == (4000, 2) and features.valid.shape == (4000,)
    n = int(features.valid.sum())
    assert 0 < n < 4000 and bool(features.valid[:n].all())
    batch = extractor.extract_batch(torch.rand(3, 1, 64, 80))
    assert batch["keypoints"].shape == (3, 4000, 2) and batch["descriptors"].shape == (3, 4000, 256)


def test_max_keypoints_keeps_the_best(extractor, photo_gray):
    everything = Extractor(extractor.loaded, device="cpu", warmup=False)(photo_gray).numpy()
    best = extractor(photo_gray).numpy()
    assert len(best) == 500 < len(everything)
    np.testing.assert_allclose(best.scores, np.sort(everything.scores)[::-1][:500])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_keeps_most_keypoints(photo_gray, precision):
    state = random_state_dict("v6", seed=3)
    fp32 = Extractor(state, device="cpu", warmup=False)(photo_gray).numpy()
    low = Extractor(state, device="cpu", precision=precision, warmup=False)(photo_gray).numpy()
    same = {tuple(p) for p in fp32.keypoints} & {tuple(p) for p in low.keypoints}
    assert len(same) >= 0.8 * len(fp32)


def test_resize_maps_keypoints_back(photo_gray):
    state = random_state_dict("v6", seed=3)
    big = np.kron(photo_gray, np.ones((2, 2), np.uint8))  # 480x640, each pixel doubled
    small = Extractor(state, device="cpu", warmup=False)(photo_gray).numpy()
    resized = Extractor(state, device="cpu", resize=320, warmup=False)(big).numpy()
    assert resized.image_size == (480, 640)
    expected = (small.keypoints[:50] + 0.5) * 2 - 0.5  # the 50 strongest, mapped to the big image
    distance = np.linalg.norm(expected[:, None] - resized.keypoints[None], axis=-1).min(axis=1)
    assert np.mean(distance <= 1.0) >= 0.95, distance  # point by point, not column by column


def test_configure_at_run_time(extractor, photo_gray):
    before = len(extractor(photo_gray))
    extractor.configure(max_keypoints=50)
    assert len(extractor(photo_gray)) == 50
    with pytest.raises(ValueError, match="nms_radius"):
        extractor.configure(nms_radius=-1)
    assert extractor.config.max_keypoints == 50  # a bad value leaves the old options
    extractor.configure(max_keypoints=500)
    assert len(extractor(photo_gray)) == before


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 10), np.uint8), "empty image"),
        (np.zeros((10, 10, 4), np.uint8), "HxW .* or HxWx3"),
        (np.zeros((2, 10, 10, 3), np.uint8), "HxW .* or HxWx3"),
        (np.zeros((10, 10), np.int32), "dtype must be uint8 or float"),
        (np.full((10, 10), np.nan, np.float32), "NaN"),
        (np.full((10, 10), 255.0, np.float32), r"\[0, 1\]"),
        ("image.png", "numpy array or torch tensor"),
    ],
)
def test_bad_input_gets_a_clear_error(extractor, image, message):
    with pytest.raises((ValueError, TypeError), match=message):
        extractor(image)


def test_image_smaller_than_a_cell_gives_an_empty_result(extractor):
    features = extractor(np.zeros((5, 7), np.uint8))
    assert len(features) == 0 and features.descriptors.shape == (0, 256)


def test_device_choice():
    with pytest.warns(RuntimeWarning, match="CPU"):
        Extractor("untrained", device="auto", warmup=False) if not torch.cuda.is_available() else pytest.skip()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            Extractor("untrained", device="cuda", warmup=False)


def test_features_numpy_and_to(extractor, photo_gray):
    features = extractor(photo_gray)
    as_numpy = features.numpy()
    assert isinstance(as_numpy.keypoints, np.ndarray) and len(as_numpy) == len(features)
    back = as_numpy.to("cpu")
    assert isinstance(back.descriptors, torch.Tensor)


def test_mutual_nearest_neighbour_matching():
    torch.manual_seed(0)
    d0 = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    perm = torch.randperm(50)
    d1 = torch.nn.functional.normalize(d0[perm] + 0.01 * torch.randn(50, 16), dim=1)
    matches, distances = match_descriptors(d0, d1)
    assert len(matches) == 50
    assert torch.equal(perm[matches[:, 1]], matches[:, 0])
    assert distances.max() < 0.1
    strict, _ = match_descriptors(d0, d1, max_distance=0.0)
    assert len(strict) == 0
    d_dup = torch.cat([d1, d1[:1]])  # a duplicate makes the ratio test reject that point
    ratio_matches, _ = match_descriptors(d0, d_dup, ratio=0.8)
    assert 0 < len(ratio_matches) < 50
    empty, _ = match_descriptors(d0[:0], d1)
    assert empty.shape == (0, 2)


def test_dense_scores_are_the_maps_keypoints_come_from(extractor, photo_gray):
    from superpoint_training.model.keypoints import nms, remove_border_scores, top_k_keypoints

    image = torch.from_numpy(photo_gray[:100, :150]).float()[None, None] / 255
    scores = extractor.dense_scores(image)
    assert scores.shape == (1, 100, 150) and float(scores.min()) >= 0 and float(scores.max()) <= 1
    scores = scores[:, :96, :144]  # the publishers' score map: 8*floor(H/8) x 8*floor(W/8), zero beyond
    keypoints, _, valid = top_k_keypoints(remove_border_scores(nms(scores, 4), 4), 0.005, 500)
    expected = extractor.extract_batch(image)
    torch.testing.assert_close(keypoints[valid], expected["keypoints"][expected["valid"]])


def test_set_comparison_allows_boundary_swaps_only():
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 100, (20, 2)).astype(np.float32)
    scores = np.linspace(0.9, 0.1, 20).astype(np.float32)
    descriptors = rng.normal(size=(20, 8)).astype(np.float32)
    base = SimpleNamespace(keypoints=keypoints, scores=scores, descriptors=descriptors)
    tied = scores.copy()
    tied[-1] = tied[-2]
    order = np.r_[np.arange(18), 19, 18]  # the last two tie and come in the other order
    swapped = SimpleNamespace(keypoints=keypoints[order], scores=tied[order], descriptors=descriptors[order])
    assert_same_features(swapped, SimpleNamespace(keypoints=keypoints, scores=tied, descriptors=descriptors))
    boundary = SimpleNamespace(keypoints=np.r_[keypoints[:19], [[500.0, 500.0]]], scores=np.r_[scores[:19], 0.1],
                               descriptors=np.r_[descriptors[:19], descriptors[:1]])
    assert_same_features(boundary, base)  # the last point replaced by a tie at the top-k boundary
    strong = SimpleNamespace(keypoints=np.r_[[[500.0, 500.0]], keypoints[1:]], scores=scores,
                             descriptors=descriptors)
    with pytest.raises(AssertionError):
        assert_same_features(strong, base)  # a strong point moved: a real difference
    columns = SimpleNamespace(keypoints=np.c_[keypoints[:, 0], keypoints[::-1, 1]], scores=scores,
                              descriptors=descriptors)
    with pytest.raises(AssertionError):
        assert_same_features(columns, base)  # x and y paired differently
