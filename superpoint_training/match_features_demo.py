"""Two-image matching demo: SuperPoint against SIFT, as in the reference's ``match_features_demo.py``.

With no images given it takes a real photo shipped in scikit-image (CC0) and a warp of it by a
known random homography, so that the estimated homography can be scored (mean error of the four
warped image corners, the HPatches correctness measure).

    python -m superpoint_training.match_features_demo
    python -m superpoint_training.match_features_demo img0.png img1.png --weights superpoint_v6_from_tf
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .common.cli import add_backend_arguments, add_detection_arguments, add_scales_argument, command_parser, flag
from .common.geometry_guard import find_homography
from .common.viz import draw_matches, save_rgb, stack_rows
from .data.geometry import corner_error, random_homography, warp_image
from .model.extractor import Extractor
from .model.loading import WeightsError
from .model.matching import match_descriptors

RANSAC_THRESHOLD = 3.0


@dataclass
class MethodResult:
    method: str
    keypoints0: int
    keypoints1: int
    matches: int
    inliers: int
    corner_error: float | None  # pixels; None without a known homography
    extract_ms: float  # per image
    match_ms: float


def _estimate(points0: np.ndarray, points1: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    H, inliers, _ = find_homography(points0, points1, RANSAC_THRESHOLD)  # None on degenerate matches
    return H, inliers


class DemoInputError(ValueError):
    """An image or homography file the demo cannot use."""


def _load(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise DemoInputError(f"image not found: {path}")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DemoInputError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _load_homography(path: Path) -> np.ndarray:
    try:
        H = np.loadtxt(path)
    except (OSError, ValueError) as error:
        raise DemoInputError(f"{path}: cannot read a 3x3 homography ({error})") from None
    if H.shape != (3, 3):
        raise DemoInputError(f"{path}: expected a 3x3 homography, got shape {H.shape}")
    return H


def default_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """scikit-image's astronaut photo (CC0) and its warp by a random homography of known H."""
    try:
        from skimage import data
    except ImportError:
        raise DemoInputError(
            "the built-in pair is a scikit-image photo and scikit-image is not installed: "
            "pip install scikit-image, or give two images"
        ) from None

    image0 = data.astronaut()
    H = random_homography(image0.shape[:2], np.random.default_rng(seed))
    return image0, warp_image(image0, H), H, "skimage.data.astronaut() and a warp by a random homography"


def run_superpoint(extractor: Extractor, image0, image1, H_true, repeats: int = 3):
    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (image0, image1)]
    start = time.perf_counter()
    for _ in range(repeats):
        f0, f1 = (f.numpy() for f in extractor(gray))
    extract_ms = (time.perf_counter() - start) / repeats / 2 * 1e3
    start = time.perf_counter()
    matches, _ = match_descriptors(torch.from_numpy(f0.descriptors), torch.from_numpy(f1.descriptors), ratio=0.95)
    matches = matches.numpy()
    match_ms = (time.perf_counter() - start) * 1e3
    H, inliers = _estimate(f0.keypoints[matches[:, 0]], f1.keypoints[matches[:, 1]])
    error = corner_error(H, H_true, image0.shape[:2]) if H_true is not None else None
    result = MethodResult("SuperPoint", len(f0), len(f1), len(matches), int(inliers.sum()), error, extract_ms, match_ms)
    return result, (f0.keypoints, f1.keypoints, matches, inliers)


def run_sift(image0, image1, H_true, n_features: int = 1000):
    sift = cv2.SIFT_create(nfeatures=n_features)
    start = time.perf_counter()
    kp0, d0 = sift.detectAndCompute(cv2.cvtColor(image0, cv2.COLOR_RGB2GRAY), None)
    kp1, d1 = sift.detectAndCompute(cv2.cvtColor(image1, cv2.COLOR_RGB2GRAY), None)
    extract_ms = (time.perf_counter() - start) / 2 * 1e3
    p0 = np.array([k.pt for k in kp0], np.float32).reshape(-1, 2)
    p1 = np.array([k.pt for k in kp1], np.float32).reshape(-1, 2)
    start = time.perf_counter()
    pairs = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d0, d1) if d0 is not None and d1 is not None else []
    matches = np.array([[m.queryIdx, m.trainIdx] for m in pairs], np.int64).reshape(-1, 2)
    match_ms = (time.perf_counter() - start) * 1e3
    H, inliers = _estimate(p0[matches[:, 0]], p1[matches[:, 1]])
    error = corner_error(H, H_true, image0.shape[:2]) if H_true is not None else None
    result = MethodResult("SIFT", len(p0), len(p1), len(matches), int(inliers.sum()), error, extract_ms, match_ms)
    return result, (p0, p1, matches, inliers)


def _title(r: MethodResult) -> str:
    error = f", corner error {r.corner_error:.2f} px" if r.corner_error is not None else ""
    return f"{r.method}: {r.keypoints0}/{r.keypoints1} keypoints, {r.matches} matches, {r.inliers} inliers{error}"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.match_features_demo",
        "Match two images with SuperPoint and with SIFT, estimate the homography, draw the matches.",
        [
            "python -m superpoint_training.match_features_demo",
            "python -m superpoint_training.match_features_demo a.jpg b.jpg --weights superpoint_v6_from_tf",
        ],
    )
    parser.add_argument("images", nargs="*", help="two images (default: a scikit-image photo and a known warp of it)")
    parser.add_argument("--homography", type=Path, help="3x3 text file mapping image 0 to image 1, to score the estimate")
    parser.add_argument("--weights", default="default", help="weights file or name (default: the best that ships)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_backend_arguments(parser)
    parser.add_argument(*flag("max-keypoints"), type=int, default=1000)
    add_detection_arguments(parser)
    add_scales_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random homography of the default pair")
    parser.add_argument("--output", type=Path, default=Path("outputs/match_demo.png"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.images) not in (0, 2):
        parser.error("give two images, or none for the built-in pair")

    try:
        if args.images:
            image0, image1 = (_load(p) for p in args.images)
            H_true = _load_homography(args.homography) if args.homography else None
            source = f"{args.images[0]} and {args.images[1]}"
        else:
            image0, image1, H_true, source = default_pair(args.seed)
        extractor = Extractor(
            args.weights, args.device, max_keypoints=args.max_keypoints,
            detection_threshold=args.detection_threshold, nms_radius=args.nms_radius,
            remove_borders=args.remove_borders, scales=args.scales,
            warmup=image0.shape[:2],
            backend=args.backend, precision=args.precision,
        )
    except (DemoInputError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"images:  {source}")
    print(f"weights: {extractor.weights_description}")
    if extractor.loaded.format == "untrained":
        print("         NOTE: untrained weights give meaningless descriptors; see README for trained weights.")
    print(f"device:  {extractor.device}, {extractor.backend} {extractor.precision}, threshold {extractor.config.detection_threshold}, "
          f"NMS radius {extractor.config.nms_radius}, scales {list(extractor.config.scales)}, "
          f"max keypoints {args.max_keypoints}")

    sp, sp_draw = run_superpoint(extractor, image0, image1, H_true)
    sift, sift_draw = run_sift(image0, image1, H_true)
    legend = (f"inlier: agrees with the RANSAC homography within {RANSAC_THRESHOLD:g} px", "outlier: rejected by RANSAC")
    picture = stack_rows([
        draw_matches(image0, image1, *sp_draw, title=_title(sp), legend=legend),
        draw_matches(image0, image1, *sift_draw, title=_title(sift), legend=legend),
    ])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_rgb(args.output, picture)

    print(f"\n{'method':<11}{'kpts 0':>8}{'kpts 1':>8}{'matches':>9}{'inliers':>9}{'H error px':>12}"
          f"{'extract ms':>12}{'match ms':>10}")
    for r in (sp, sift):
        error = f"{r.corner_error:.2f}" if r.corner_error is not None else "-"
        print(f"{r.method:<11}{r.keypoints0:>8}{r.keypoints1:>8}{r.matches:>9}{r.inliers:>9}{error:>12}"
              f"{r.extract_ms:>12.1f}{r.match_ms:>10.1f}")
    print("(extract ms: per image, host image to host features; H error: mean corner error of the estimated "
          "homography, HPatches' correctness measure)")
    print(f"\nwrote {args.output}")
    main.last_results = [asdict(sp), asdict(sift)]  # for tests
    return 0


if __name__ == "__main__":
    sys.exit(main())
