"""Train the learned sub-pixel refinement (``subpixel="learned"``): with the network frozen, or with it.

Two ways, one loss. **Frozen** (``python -m superpoint_training.train_refinement``, below):

Supervision is the known homography of image pairs: a crop ``A`` of a photo and its warp ``B`` by a
random homography ``H``. The frozen network detects integer keypoints in both (single scale); a
keypoint of A whose warp by H has a keypoint of B within ``--match-radius`` px as mutual nearest
neighbour makes a pair (a, b). The refinement moves both, and the loss is the distance between
H(a + offset_a) and b + offset_b (pixels of B): what the position error of
``benchmarks/bench_localisation.py`` measures, and what homography estimation feels. The network
never changes, so the score-map windows (the refinement's inputs) are computed once and the
perceptron trains on them in seconds.

Photos are split by file (every ``--val-every``-th file held out, reported before and after); the
matching demo's astronaut is left out of training, since the measurement uses it. The output is the
weights file with the refinement added and ``subpixel="learned"`` as its default
(:func:`superpoint_training.model.loading.attach_refinement`); the network's tensors are copied
unchanged. The defaults are the settings chosen by the held-out median (2026-12-06: 0.63 px against
the Gaussian fit's 0.90 on 9,217 held-out pairs; 4.4 min of network passes and 1 min of training
on 2 CPU cores). The command is ``python -m superpoint_training.train_refinement``.

**Jointly** (``refinement.weight`` > 0 in a SuperPoint training run, :func:`joint_refinement_loss`): the
training pairs' known warp supervises the same distance on the keypoints the network detects in both
images of each pair at that iteration; the score windows are not detached, so the loss moves the
network's score map too (its peaks where the warp says the points are) while the perceptron learns
to read it. The trainer saves the refinement with the network in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.geometry import random_homography, warp_image
from ..model.extractor import Extractor
from ..model.keypoints import DetectionConfig, detect, logits_to_scores
from ..model.refinement import SubpixelRefinement

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")
EXCLUDED = ("astronaut",)  # the measurement's photo (match_features_demo.default_pair)


@dataclass
class PairSet:
    """Matched keypoints of image pairs with the refinement's inputs, ready to train on."""

    features_a: torch.Tensor  # (N, F)
    features_b: torch.Tensor  # (N, F)
    points_a: torch.Tensor  # (N, 2) integer keypoints of A
    points_b: torch.Tensor  # (N, 2) integer keypoints of B
    homographies: torch.Tensor  # (N, 3, 3) A to B, one per pair (repeated)

    def __len__(self) -> int:
        return int(self.points_a.shape[0])


def list_photos(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [p for p in files if not any(name in p.stem.lower() for name in EXCLUDED)]


def warp_torch(points: torch.Tensor, homographies: torch.Tensor) -> torch.Tensor:
    """(N, 2) points by (N, 3, 3) homographies, differentiable."""
    ones = torch.ones_like(points[:, :1])
    projected = torch.einsum("nij,nj->ni", homographies, torch.cat((points, ones), dim=1))
    return projected[:, :2] / projected[:, 2:]


def mutual_matches(warped_a: torch.Tensor, points_b: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j) of mutual nearest neighbours between warped A points (N, 2) and B points (M, 2)
    within ``radius`` (tensors or arrays; tensors back)."""
    warped_a, points_b = torch.as_tensor(warped_a).double(), torch.as_tensor(points_b).double()
    if len(warped_a) == 0 or len(points_b) == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    distances = torch.cdist(warped_a, points_b)
    nearest_b = distances.argmin(1)
    nearest_a = distances.argmin(0)
    i = torch.arange(len(warped_a), device=distances.device)
    keep = (nearest_a[nearest_b] == i) & (distances[i, nearest_b] <= radius)
    return i[keep], nearest_b[keep]


def random_crop(gray: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
    """A crop of ``size`` from the photo resized so that its longer side is 1 to 2 times the crop's."""
    h, w = size
    longer = rng.uniform(1.0, 2.0) * max(h, w)
    factor = longer / max(gray.shape)
    resized = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    if resized.shape[0] < h or resized.shape[1] < w:
        return None
    y = int(rng.integers(0, resized.shape[0] - h + 1))
    x = int(rng.integers(0, resized.shape[1] - w + 1))
    return resized[y:y + h, x:x + w]


@torch.inference_mode()
def collect_pairs(extractor: Extractor, photos: Sequence[Path], refinement: SubpixelRefinement, crops: int,
                  size: tuple[int, int], match_radius: float, seed: int) -> PairSet:
    """Pairs of every photo (``crops`` crops each) through the frozen network; see the module doc."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("features_a", "features_b", "points_a", "points_b",
                                                             "homographies")}
    config = extractor.config
    for path in photos:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            continue
        for _ in range(crops):
            crop = random_crop(gray, size, rng)
            if crop is None:
                continue
            H = random_homography(size, rng)
            batch = torch.from_numpy(np.stack((crop, warp_image(crop, H))).astype(np.float32) / 255.0)[:, None]
            logits, _ = extractor.pipeline.run_network(batch, with_descriptors=False)
            output = detect(logits, None, config)
            scores = logits_to_scores(logits)
            valid = output["valid"]
            points_a = output["keypoints"][0, valid[0]]
            points_b = output["keypoints"][1, valid[1]]
            warped = cv2.perspectiveTransform(points_a.numpy().astype(np.float64)[None], H)[0]
            i, j = mutual_matches(warped, points_b, match_radius)
            if len(i) == 0:
                continue
            a, b = points_a[i], points_b[j]
            parts["features_a"].append(refinement.features(scores[:1], a[None], batch[:1])[0])
            parts["features_b"].append(refinement.features(scores[1:], b[None], batch[1:])[0])
            parts["points_a"].append(a)
            parts["points_b"].append(b)
            parts["homographies"].append(torch.from_numpy(H).float()[None].expand(len(i), 3, 3))
    if not parts["points_a"]:
        raise ValueError("no matched keypoints in any pair: check the photos and the weights")
    return PairSet(**{k: torch.cat(v) for k, v in parts.items()})


def pair_errors(refinement: SubpixelRefinement | None, pairs: PairSet) -> torch.Tensor:
    """Distances (px of B) between H(a + offset) and b + offset; ``None``: integer pixels."""
    a, b = pairs.points_a, pairs.points_b
    if refinement is not None:
        a = a + refinement.offsets(pairs.features_a)
        b = b + refinement.offsets(pairs.features_b)
    return (warp_torch(a, pairs.homographies) - b).norm(dim=1)


def pair_loss(refinement: SubpixelRefinement, pairs: PairSet) -> torch.Tensor:
    """The mean distance of :func:`pair_errors`, smoothed at 0 (an L1 loss: the measurement is a median)."""
    return (pair_errors(refinement, pairs) ** 2 + 1e-4).sqrt().mean()


def gaussian_errors(pairs: PairSet) -> torch.Tensor:
    """The same distances with the Gaussian fit (the refinement's starting point: its last input)."""
    a = pairs.points_a + pairs.features_a[:, -2:]
    b = pairs.points_b + pairs.features_b[:, -2:]
    return (warp_torch(a, pairs.homographies) - b).norm(dim=1)


def train(refinement: SubpixelRefinement, pairs: PairSet, steps: int, batch_size: int, lr: float,
          seed: int, weight_decay: float = 0.0, held_out: PairSet | None = None,
          check_every: int = 250) -> SubpixelRefinement:
    """AdamW on :func:`pair_loss`. With ``held_out``, the
    parameters of the lowest held-out median (checked every ``check_every`` steps) are kept: the
    perceptron overfits the training photos' textures when it reads the image."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(refinement.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    best = (float("inf"), None)
    refinement.train()
    for step in range(1, steps + 1):
        index = torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=generator)
        subset = PairSet(**{k: getattr(pairs, k)[index] for k in PairSet.__dataclass_fields__})
        loss = pair_loss(refinement, subset)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if held_out is not None and (step % check_every == 0 or step == steps):
            with torch.no_grad():
                median = float(pair_errors(refinement, held_out).median())
            if median < best[0]:
                best = (median, {k: v.clone() for k, v in refinement.state_dict().items()})
    if best[1] is not None:
        refinement.load_state_dict(best[1])
    return refinement.eval()


def summary(refinement: SubpixelRefinement, pairs: PairSet) -> dict[str, float]:
    with torch.no_grad():
        return {"pairs": len(pairs),
                "median_none_px": float(pair_errors(None, pairs).median()),
                "median_gaussian_px": float(gaussian_errors(pairs).median()),
                "median_learned_px": float(pair_errors(refinement, pairs).median())}


def training_pairs(refinement: SubpixelRefinement, scores: torch.Tensor, images: torch.Tensor,
                   keypoints: torch.Tensor, valid: torch.Tensor, homographies: torch.Tensor,
                   match_radius: float) -> PairSet | None:
    """The matched keypoints of a training batch of pairs, with inputs that keep their gradient.

    ``scores`` (2B, H, W) and ``images`` (2B, 1, H, W): the B images then their B warps;
    ``keypoints`` / ``valid`` (2B, K, 2) / (2B, K): integer detections of each; ``homographies``
    (B, 3, 3) image to warp. None when no pair has a match."""
    b = homographies.shape[0]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in PairSet.__dataclass_fields__}
    for k in range(b):
        points_a, points_b = keypoints[k, valid[k]].float(), keypoints[b + k, valid[b + k]].float()
        H = homographies[k].float()
        i, j = mutual_matches(warp_torch(points_a, H.expand(len(points_a), 3, 3)).detach(), points_b, match_radius)
        if len(i) == 0:
            continue
        a, bb = points_a[i], points_b[j]
        parts["features_a"].append(refinement.features(scores[k:k + 1], a[None], images[k:k + 1])[0])
        parts["features_b"].append(refinement.features(scores[b + k:b + k + 1], bb[None], images[b + k:b + k + 1])[0])
        parts["points_a"].append(a)
        parts["points_b"].append(bb)
        parts["homographies"].append(H[None].expand(len(a), 3, 3))
    if not parts["points_a"]:
        return None
    return PairSet(**{k: torch.cat(v) for k, v in parts.items()})


def joint_refinement_loss(refinement: SubpixelRefinement, logits: torch.Tensor, images: torch.Tensor,
                          homographies: torch.Tensor, options: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The refinement's loss on a training batch (the ``refinement`` section of the training config),
    and what to log: the median distance with the refinement and with the Gaussian fit alone (px),
    and the number of matched pairs. Keypoints are chosen without gradient (threshold, NMS, the
    ``max_keypoints`` highest per image); the score windows around them keep theirs unless
    ``network_gradient`` is false. No match in the batch: a zero loss that keeps the graph."""
    with torch.autocast(logits.device.type, enabled=False):  # bf16 coordinates would be off by a pixel
        return _joint_refinement_loss(refinement, logits, images, homographies, options)


def _joint_refinement_loss(refinement: SubpixelRefinement, logits: torch.Tensor, images: torch.Tensor,
                           homographies: torch.Tensor, options: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    config = DetectionConfig(options["detection_threshold"], options["nms_radius"], options["remove_borders"],
                             max_keypoints=options["max_keypoints"])
    with torch.no_grad():
        detections = detect(logits.detach().float(), None, config)
    scores = logits_to_scores(logits)
    if not options["network_gradient"]:
        scores = scores.detach()
    pairs = training_pairs(refinement, scores, images.float(), detections["keypoints"], detections["valid"],
                           homographies, options["match_radius"])
    if pairs is None:
        # zero gradients, not none: under DDP every process averages the same parameters' gradients
        zero = scores.sum() * 0.0 + sum(p.sum() for p in refinement.parameters()) * 0.0
        nan = torch.tensor(float("nan"), device=logits.device)
        return zero, {"refinement_px": nan, "gaussian_px": nan, "refinement_pairs": torch.zeros((), device=logits.device)}
    loss = pair_loss(refinement, pairs)
    with torch.no_grad():
        stats = {"refinement_px": pair_errors(refinement, pairs).median(), "gaussian_px": gaussian_errors(pairs).median(),
                 "refinement_pairs": torch.tensor(float(len(pairs)), device=logits.device)}
    return loss, stats
