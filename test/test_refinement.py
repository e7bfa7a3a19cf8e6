"""The learned sub-pixel refinement (``subpixel="learned"``) against a slow per-keypoint reference.

Synthetic Gaussian blobs with known sub-pixel centres, at several sizes: on score maps directly (the
untrained refinement is the Gaussian fit, exact on Gaussian peaks; a refinement with random weights
is what a plain Python loop over keypoints computes), and on images through the Extractor on every
backend installed here (the refinement runs in the torch post-processing after each backend's
network). The published weights carry no refinement and their outputs do not change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpoint_training import Extractor
from superpoint_training.model.backends import is_available
from superpoint_training.model.keypoints import nms, top_k_keypoints
from superpoint_training.model.loading import WeightsError, attach_refinement, load_superpoint
from superpoint_training.model.refinement import LOG_FLOOR, SubpixelRefinement

BACKENDS = [b for b in ("torch", "onnxruntime", "openvino") if is_available(b)]


def blob_map(centres: np.ndarray, size: tuple[int, int], sigma: float = 1.3) -> np.ndarray:
    """(H, W) maximum of Gaussian blobs at sub-pixel centres (x, y), peak 1."""
    yy, xx = np.mgrid[: size[0], : size[1]].astype(np.float64)
    out = np.zeros(size)
    for x0, y0 in centres:
        out = np.maximum(out, np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)))
    return out


def random_centres(size: tuple[int, int], count: int, seed: int, margin: int = 6) -> np.ndarray:
    """``count`` sub-pixel centres at least 10 px apart, ``margin`` px from the edges."""
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    while len(centres) < count:
        c = rng.uniform((margin, margin), (size[1] - 1 - margin, size[0] - 1 - margin))
        if all(np.linalg.norm(c - o) >= 10 for o in centres):
            centres.append(c)
    return np.array(centres)


def randomised(seed: int = 0, **options) -> SubpixelRefinement:
    """A refinement whose correction is not zero (the trained one's weights are not in the repository)."""
    torch.manual_seed(seed)
    refinement = SubpixelRefinement(**options)
    torch.nn.init.normal_(refinement.mlp[-1].weight, std=0.3)
    torch.nn.init.normal_(refinement.mlp[-1].bias, std=0.3)
    return refinement.eval().requires_grad_(False)


def slow_reference(refinement: SubpixelRefinement, scores: np.ndarray, keypoints: np.ndarray,
                   image: np.ndarray | None = None) -> np.ndarray:
    """One keypoint at a time, in float64 numpy: the window (edges repeated), the cell, the image
    window (normalised), the parabola through the log-scores (edges mirrored), the perceptron, the
    bounded correction."""
    h, w = scores.shape
    r = refinement.radius
    layers = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
              for m in refinement.mlp if isinstance(m, torch.nn.Linear)]

    def score(yy: int, xx: int, mirror: bool) -> float:
        if mirror:
            yy = -yy if yy < 0 else (2 * (h - 1) - yy if yy >= h else yy)
            xx = -xx if xx < 0 else (2 * (w - 1) - xx if xx >= w else xx)
        return float(scores[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)])

    out = []
    for x, y in keypoints.astype(int):
        log = np.log(max(score(y, x, False), LOG_FLOOR))
        window = [np.log(max(score(y + dy, x + dx, False), LOG_FLOOR)) - log
                  for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
        cells = np.zeros(16)
        cells[x % 8] = 1
        cells[8 + y % 8] = 1
        patch = []
        if refinement.image_radius:
            q = refinement.image_radius
            patch = np.array([float(image[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)])
                              for dy in range(-q, q + 1) for dx in range(-q, q + 1)])
            patch = patch - patch.mean()
            patch = patch / (np.sqrt((patch**2).mean()) + 0.02)
        fit = []
        for dx, dy in ((1, 0), (0, 1)):
            c, before, after = (np.log(max(score(y + s * dy, x + s * dx, True), 1e-12)) for s in (0, -1, 1))
            curvature = before - 2 * c + after
            fit.append(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5) if curvature < 0 else 0.0)
        hidden = np.concatenate((window, cells, patch, fit))
        for i, (weight, bias) in enumerate(layers):
            hidden = weight @ hidden + bias
            if i < len(layers) - 1:
                hidden = np.maximum(hidden, 0)
        out.append((x, y) + np.array(fit) + refinement.max_shift * np.tanh(hidden))
    return np.array(out)


@pytest.mark.parametrize("size", [(33, 47), (64, 80), (41, 128)])
def test_untrained_refinement_finds_blob_centres(size):
    """Its last layer starts at zero: the Gaussian fit, exact on Gaussian blobs, at any size."""
    centres = random_centres(size, 4, seed=sum(size))
    scores = torch.from_numpy(blob_map(centres, size)).float()[None]
    keypoints, _, valid = top_k_keypoints(nms(scores, 4), 0.5, len(centres))
    assert bool(valid.all())
    refined = SubpixelRefinement().requires_grad_(False)(scores, keypoints)[0].numpy()
    nearest = np.linalg.norm(refined[:, None] - centres[None], axis=-1).min(1)
    integer = np.linalg.norm(keypoints[0].numpy()[:, None] - centres[None], axis=-1).min(1)
    assert integer.max() > 0.2  # the integer maxima are off
    assert nearest.max() < 0.01, nearest


@pytest.mark.parametrize(("size", "radius", "image_radius"), [((33, 47), 3, 0), ((64, 80), 2, 4), ((16, 24), 3, 5)])
def test_refinement_matches_slow_reference(size, radius, image_radius):
    """Batched gathers and perceptron = a loop over keypoints, keypoints at the edges included."""
    refinement = randomised(seed=radius, radius=radius, hidden=16, max_shift=1.5, image_radius=image_radius)
    maps = [blob_map(random_centres(size, 2, seed=s, margin=2), size) + 1e-3 for s in (1, 2)]
    scores = torch.from_numpy(np.stack(maps)).float()
    images = np.random.default_rng(radius).random((2, 1, *size)).astype(np.float32)
    edges = [(0, 0), (size[1] - 1, size[0] - 1), (size[1] - 1, 0), (1, size[0] - 2), (size[1] // 2, size[0] // 2)]
    keypoints = torch.tensor([edges, edges[::-1]], dtype=torch.float32)
    fast = refinement(scores, keypoints, torch.from_numpy(images)).numpy()
    for b in range(2):
        slow = slow_reference(refinement, maps[b].astype(np.float32), keypoints[b].numpy(), images[b, 0])
        np.testing.assert_allclose(fast[b], slow, atol=1e-4)
    assert np.abs(fast - keypoints.numpy()).max() > 0.05  # the correction is not zero


@pytest.fixture(scope="module", params=[0, 4], ids=["scores", "scores+image"])
def learned_weights(request, tmp_path_factory):
    """The default weights with a randomised refinement attached (and ``subpixel="learned"`` default),
    reading the score map only or the image too."""
    path = tmp_path_factory.mktemp("refinement") / "learned.pth"
    attach_refinement("default", randomised(image_radius=request.param), path, metadata={"test": True})
    return path


def blob_image(size: tuple[int, int], seed: int) -> np.ndarray:
    centres = random_centres(size, max(3, size[0] * size[1] // 900), seed=seed, margin=10)
    return (0.1 + 0.8 * blob_map(centres, size, sigma=2.5)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [(72, 104), (121, 163)])
def test_every_backend_runs_the_refinement(learned_weights, backend, size):
    """On blob images through each backend's network: the keypoints are the slow reference's on
    that backend's own score map and integer maxima (single scale; the pyramid refines each level)."""
    image = blob_image(size, seed=size[0])
    extractor = Extractor(learned_weights, device="cpu", backend=backend, precision="fp32", warmup=False,
                          scales=(1.0,), detection_threshold=0.001)
    assert extractor.config.subpixel == "learned"
    integer = Extractor(learned_weights, device="cpu", backend=backend, precision="fp32", warmup=False,
                        scales=(1.0,), detection_threshold=0.001, subpixel="none")(image).keypoints.numpy()
    scores = extractor.dense_scores(torch.from_numpy(image)[None, None])[0].numpy()
    refined = extractor(image).keypoints.numpy()
    assert len(refined) == len(integer) > 0
    slow = slow_reference(extractor.config.refinement.cpu(), scores, integer, image)
    np.testing.assert_allclose(refined, slow, atol=1e-3)
    pyramid = Extractor(learned_weights, device="cpu", backend=backend, precision="fp32", warmup=False,
                        detection_threshold=0.001, scales=(1.0, 0.5))(image)
    assert len(pyramid) >= len(refined)


def test_weights_round_trip_and_published_outputs_unchanged(learned_weights, tmp_path):
    loaded = load_superpoint(learned_weights)
    assert loaded.detection_defaults["subpixel"] == "learned"
    reference = randomised(image_radius=loaded.refinement.image_radius)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.refinement.state_dict()[key], value)
    plain = load_superpoint("default")
    assert plain.refinement is not None and plain.refinement.config() != reference.config()  # replaced
    for key, value in plain.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)  # the network is copied unchanged
    image = blob_image((96, 128), seed=3)
    published = Extractor("default", device="cpu", warmup=False)(image)
    same = Extractor(learned_weights, device="cpu", warmup=False, subpixel=published_mode())(image)
    np.testing.assert_array_equal(published.keypoints.numpy(), same.keypoints.numpy())
    assert Extractor("default", device="cpu", warmup=False, subpixel="learned").config.refinement is not None
    with pytest.raises(ValueError, match="carry a trained refinement"):  # a file without one
        Extractor("superpoint_ros_rotation", device="cpu", warmup=False, subpixel="learned")
    with pytest.raises(ValueError, match="carry a trained refinement"):
        Extractor("superpoint_ros_rotation", device="cpu", warmup=False).configure(subpixel="learned")
    switched = Extractor(learned_weights, device="cpu", warmup=False, subpixel="gaussian")
    switched.configure(subpixel="learned")
    assert switched.config.refinement is not None
    broken = torch.load(learned_weights, weights_only=False)
    broken["refinement"] = {"config": {"radius": 3}, "state": {}}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="refinement"):
        load_superpoint(tmp_path / "broken.pth")


def published_mode() -> str:
    return load_superpoint("default").detection_defaults.get("subpixel", "none")


@pytest.mark.slow
def test_onnx_export_carries_the_refinement(learned_weights, tmp_path):
    """The whole-graph ONNX export (network and post-processing) reproduces the learned keypoints."""
    pytest.importorskip("onnxruntime")
    from superpoint_training.model.onnx_graph import compare_with_extractor, export_onnx, make_extractor, run_onnx

    extractor = make_extractor(learned_weights, max_keypoints=64, scales=(1.0,))
    assert extractor.config.subpixel == "learned"
    path = export_onnx(extractor, tmp_path / "learned.onnx", 72, 104, exporter="torchscript")
    images = blob_image((72, 104), seed=5)[None, None]
    stats = compare_with_extractor(run_onnx(path, images), extractor, images)
    assert stats["valid"] > 0 and stats["unmatched"] == 0 and stats["count_mismatch"] == 0, stats
