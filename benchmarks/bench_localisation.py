"""Where keypoints land: SuperPoint against SIFT on the matching demo's photo under its known warps.

For any weights, backend, precision and detection options (scales, sub-pixel mode, threshold ...),
on the pairs of ``python -m superpoint_training.match_features_demo --seed 0 .. N-1`` (scikit-image's
CC0 astronaut and its warp by the random homography of that seed; default 8 warps), it measures:

- position error: each keypoint of image 0 is warped into image 1 by the true homography and its
  distance to the nearest keypoint of image 1 taken; the median of the distances within 2 px
  (``--within``), pooled over the warps and per warp, with how many points that is;
- the demo's corner error: the demo's matching and RANSAC homography (its own functions, so the
  figure is the demo's), the mean error of the four warped image corners, per warp and the median
  over the warps. OpenCV's RANSAC draws from a fixed seed, so the order of the matches decides the
  estimate; ``--ransac-orders N`` also runs it on the matches shuffled with seeds 1 .. N-1 (as the
  evaluation command does) and gives each warp's median over the orders.

SIFT (the demo's: OpenCV, 1000 features, cross-checked matches) runs on the same warps in the same
run. ``--refine`` adds rows of SuperPoint's keypoints moved after extraction, before the demo's
matching (descriptors as extracted): ``cornersubpix``, OpenCV's ``cornerSubPix`` (half window 3: a
7x7 window), the classical refinement to beat; ``softargmax``, the score-weighted mean position of
the network's own heatmap in a 5x5 window around each keypoint (no training). Output: a table on
stdout and a JSON file with every per-warp figure, the settings, the command, the date and the
machine (CPU flags, library versions); the JSON also keeps the demo's extraction time per image (one run,
refinement included: a note, not a speed benchmark; benchmarks/bench_extractor.py times the paths).

Examples::

    python benchmarks/bench_localisation.py                       # default weights, auto path, 8 warps
    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/bench_localisation.py --scales 1 \\
        --refine cornersubpix,softargmax --ransac-orders 20 --threads 2  # single scale, with two refinements
    python benchmarks/bench_localisation.py --weights superpoint_v6_from_tf --backend torch --precision fp32 \\
        --warps 16 --json outputs/loc_v6.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from superpoint_training import match_features_demo as demo  # noqa: E402
from superpoint_training.common.cli import (  # noqa: E402
    add_extractor_arguments,
    describe_path,
    extractor_from_args,
    extractor_settings,
)
from superpoint_training.common.geometry_guard import find_homography  # noqa: E402
from superpoint_training.common.machine import describe_machine, machine_record  # noqa: E402
from superpoint_training.data.geometry import corner_error, warp_points  # noqa: E402
from superpoint_training.model.extractor import Extractor, Features  # noqa: E402
from superpoint_training.model.loading import WeightsError  # noqa: E402

REFINEMENTS = ("none", "cornersubpix", "softargmax")
REFINEMENT_NAMES = {"cornersubpix": "cornerSubPix", "softargmax": "heatmap soft-argmax"}
CORNER_SUBPIX = {"max_iterations": 40, "epsilon": 0.001}  # OpenCV's termination criteria
DEFAULT_WINDOWS = {"cornersubpix": 3, "softargmax": 2}  # cornerSubPix winSize (3, 3): a 7x7 window
PAIRS = "skimage.data.astronaut() and its warp by random_homography(default_rng(seed)) (match_features_demo.default_pair)"
Pair = tuple[np.ndarray, np.ndarray, np.ndarray]  # image 0 (RGB), image 1 (RGB), H mapping 0 to 1


def position_errors(keypoints0: np.ndarray, keypoints1: np.ndarray, H: np.ndarray, within: float = 2.0) -> np.ndarray:
    """Distances (px, in image 1) from each keypoint of image 0 warped by ``H`` to its nearest keypoint
    of image 1, those at most ``within``; points without a neighbour that close are left out."""
    warped = warp_points(np.asarray(keypoints0, np.float64).reshape(-1, 2), H)
    points1 = np.asarray(keypoints1, np.float64).reshape(-1, 2)
    if len(warped) == 0 or len(points1) == 0:
        return np.zeros(0)
    nearest = np.linalg.norm(warped[:, None] - points1[None], axis=-1).min(axis=1)
    return nearest[nearest <= within]


def corner_subpix(gray: np.ndarray, keypoints: np.ndarray, half_window: int = DEFAULT_WINDOWS["cornersubpix"]) -> np.ndarray:
    """OpenCV's ``cornerSubPix`` on (N, 2) keypoints of a gray uint8 image (window 2*half_window+1)."""
    points = np.array(keypoints, np.float32).reshape(-1, 1, 2)  # a copy: OpenCV refines it in place
    if len(points) == 0:
        return points.reshape(0, 2)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, CORNER_SUBPIX["max_iterations"],
                CORNER_SUBPIX["epsilon"])
    refined = cv2.cornerSubPix(np.ascontiguousarray(gray), points, (half_window, half_window), (-1, -1), criteria)
    return refined.reshape(-1, 2)


def soft_argmax(scores: np.ndarray, keypoints: np.ndarray, radius: int = 2) -> np.ndarray:
    """The score-weighted mean position in the (2*radius+1)^2 window of a (H, W) score map around
    each keypoint's nearest pixel (zero scores beyond the map): a refinement read from the
    network's own heatmap, with no training."""
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
    h, w = scores.shape
    centre = np.stack((np.clip(np.rint(keypoints[:, 0]), 0, w - 1), np.clip(np.rint(keypoints[:, 1]), 0, h - 1)), -1)
    centre = centre.astype(np.int64)
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    padded = np.pad(np.asarray(scores, np.float64), radius)
    window = padded[centre[:, 1, None, None] + radius + dy, centre[:, 0, None, None] + radius + dx]  # (N, k, k)
    total = window.sum(axis=(1, 2))
    shift = np.stack(((window * dx).sum(axis=(1, 2)), (window * dy).sum(axis=(1, 2))), -1)
    shift = np.divide(shift, total[:, None], out=np.zeros_like(shift), where=total[:, None] > 0)
    return (centre + shift).astype(np.float32)


class RefinedExtractor:
    """An :class:`Extractor` whose keypoints are moved by ``refine`` (``"cornersubpix"`` or
    ``"softargmax"``) after extraction, descriptors staying those sampled at the network's positions:
    what the demo's ``run_superpoint`` calls for that row. Images come in as the demo gives them
    (gray uint8)."""

    def __init__(self, extractor: Extractor, refine: str, window: int):
        self.extractor, self.refine, self.window = extractor, refine, window

    def _refine(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        if self.refine == "cornersubpix":
            return corner_subpix(image, keypoints, self.window)
        scores = self.extractor.dense_scores(self.extractor.upload([image]))[0].float().cpu().numpy()
        return soft_argmax(scores, keypoints, self.window)

    def __call__(self, images: list[np.ndarray]) -> list[Features]:
        features = [f.numpy() for f in self.extractor(images)]
        return [dataclasses.replace(f, keypoints=self._refine(image, f.keypoints))
                for image, f in zip(images, features, strict=True)]


def order_corner_errors(points0: np.ndarray, points1: np.ndarray, H: np.ndarray, image_size: tuple[int, int],
                        orders: int) -> list[float]:
    """Corner errors of the RANSAC homography on matched points shuffled with seeds 1 .. orders-1
    (the evaluation's convention; order 0, the matches' own, is the demo's figure)."""
    errors = []
    for seed in range(1, orders):
        order = np.random.default_rng(seed).permutation(len(points0))
        estimate = find_homography(points0[order], points1[order], demo.RANSAC_THRESHOLD)[0] if len(order) >= 4 else None
        errors.append(corner_error(estimate, H, image_size))
    return errors


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def measure_warp(extractor, pair: Pair, orders: int, within: float) -> dict:
    """One method on one warp: position errors and the demo's corner error (``extractor`` None: SIFT)."""
    image0, image1, H = pair
    if extractor is None:
        result, (keypoints0, keypoints1, matches, _) = demo.run_sift(image0, image1, H)
    else:
        result, (keypoints0, keypoints1, matches, _) = demo.run_superpoint(extractor, image0, image1, H, repeats=1)
    distances = position_errors(keypoints0, keypoints1, H, within)
    corners = [result.corner_error, *order_corner_errors(
        keypoints0[matches[:, 0]], keypoints1[matches[:, 1]], H, image0.shape[:2], orders)]
    return {
        "keypoints0": result.keypoints0, "keypoints1": result.keypoints1, "within": len(distances),
        "position_median": _median(distances), "position_mean": float(distances.mean()) if len(distances) else float("nan"),
        "matches": result.matches, "inliers": result.inliers,
        "extract_ms": result.extract_ms,  # the demo's: one run, per image, refinement included; not a speed benchmark
        "corner_error": result.corner_error,  # the demo's own figure (the matches' own order)
        "corner_error_orders": corners, "corner_error_median_orders": _median(corners),
        "distances": distances,  # pooled by summarise, dropped from the JSON
    }


def summarise(per_warp: list[dict]) -> dict:
    """Pooled position error and the median over warps of the corner errors."""
    pooled = np.concatenate([w["distances"] for w in per_warp]) if per_warp else np.zeros(0)
    return {
        "position_median": _median(pooled),
        "position_mean": float(pooled.mean()) if len(pooled) else float("nan"),
        "points_within": len(pooled),
        "keypoints0": int(sum(w["keypoints0"] for w in per_warp)),
        "corner_error_median": _median([w["corner_error"] for w in per_warp]),
        "corner_error_median_orders": _median([w["corner_error_median_orders"] for w in per_warp]),
    }


def measure(extractor: Extractor, pairs: list[Pair], refinements: Sequence[str] = ("none",), orders: int = 1,
            within: float = 2.0, label: str = "SuperPoint", windows: dict[str, int] | None = None) -> dict[str, dict]:
    """Every method on every pair: ``{method: {"summary": ..., "per_warp": [...]}}``, SuperPoint with
    each refinement, then SIFT. ``windows``: the half window of each refinement (default
    :data:`DEFAULT_WINDOWS`)."""
    windows = {**DEFAULT_WINDOWS, **(windows or {})}
    methods: list[tuple[str, object]] = []
    for refine in refinements:
        if refine == "none":
            methods.append((label, extractor))
        else:
            name = f"{label} + {REFINEMENT_NAMES[refine]} (half window {windows[refine]})"
            methods.append((name, RefinedExtractor(extractor, refine, windows[refine])))
    methods.append(("SIFT", None))
    results = {}
    for name, method in methods:
        per_warp = [measure_warp(method, pair, orders, within) for pair in pairs]
        results[name] = {"summary": summarise(per_warp), "per_warp": per_warp}
    return results


def _px(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


def print_tables(results: dict[str, dict], seeds: list[int], orders: int, within: float) -> None:
    corner_head = "corner px" if orders == 1 else f"corner px ({orders} orders)"
    print(f"\nper warp (demo --seed S): position error median px (points within {within:g} px) / demo's corner error px"
          + ("" if orders == 1 else f" / median over {orders} RANSAC orders"))
    print("| method | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for name, result in results.items():
        cells = []
        for w in result["per_warp"]:
            cell = f"{_px(w['position_median'])} ({w['within']}) / {_px(w['corner_error'])}"
            if orders > 1:
                cell += f" / {_px(w['corner_error_median_orders'])}"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nsummary over {len(seeds)} warps")
    print(f"| method | position error px (median, pooled) | mean | points within {within:g} px | keypoints (image 0) "
          f"| demo's corner error px (median of warps) |" + ("" if orders == 1 else f" {corner_head} |"))
    print("|---|---|---|---|---|---|" + ("" if orders == 1 else "---|"))
    for name, result in results.items():
        s = result["summary"]
        row = (f"| {name} | {_px(s['position_median'])} | {_px(s['position_mean'])} | {s['points_within']} "
               f"| {s['keypoints0']} | {_px(s['corner_error_median'])} |")
        if orders > 1:
            row += f" {_px(s['corner_error_median_orders'])} |"
        print(row)


def _json_ready(results: dict[str, dict]) -> dict[str, dict]:
    return {name: {"summary": r["summary"],
                   "per_warp": [{k: v for k, v in w.items() if k != "distances"} for w in r["per_warp"]]}
            for name, r in results.items()}


def _refinements(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REFINEMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(REFINEMENTS)} (comma-separated), got {text!r}")
    return list(dict.fromkeys(["none", *names]))  # the unrefined row always comes first


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_localisation.py",
        description="Position error and the matching demo's corner error of SuperPoint (and SIFT) on the demo's "
        "photo under its known warps.",
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_extractor_arguments(parser, max_keypoints=1000)
    parser.add_argument("--warps", type=_positive, default=8,
                        help="the demo's pairs --seed 0 .. N-1 (default: %(default)s)")
    parser.add_argument("--ransac-orders", type=_positive, default=1,
                        help="RANSAC on the matches' own order and N-1 shuffled ones (default: %(default)s, the demo's)")
    parser.add_argument("--refine", type=_refinements, default=["none"],
                        help="also measure SuperPoint's keypoints refined by (comma-separated): cornersubpix "
                        "(OpenCV cornerSubPix), softargmax (score-weighted mean of the network's heatmap around "
                        "each keypoint)")
    parser.add_argument("--cornersubpix-window", type=_positive, default=DEFAULT_WINDOWS["cornersubpix"],
                        help="cornerSubPix half window, winSize (default: %(default)s, a 7x7 window)")
    parser.add_argument("--softargmax-window", type=_positive, default=DEFAULT_WINDOWS["softargmax"],
                        help="soft-argmax half window (default: %(default)s, 5x5)")
    parser.add_argument("--within", type=float, default=2.0,
                        help="position error: distances up to this many pixels count (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=Path("outputs/bench_localisation.json"),
                        help="where to write every figure (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.within > 0:
        parser.error(f"--within must be positive, got {args.within}")
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = list(range(args.warps))
    try:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # before the run: a bad path loses no measurement
    except OSError as error:
        print(f"error: cannot write {args.json}: {error}", file=sys.stderr)
        return 1
    try:
        pairs = [demo.default_pair(seed)[:3] for seed in seeds]
        extractor = extractor_from_args(args, warmup=pairs[0][0].shape[:2])
    except (demo.DemoInputError, WeightsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    machine = describe_machine(str(extractor.device))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    argv_shown = sys.argv[1:] if argv is None else argv
    command = "python " + shlex.join(["benchmarks/bench_localisation.py", *argv_shown])
    config = extractor.config
    label = f"SuperPoint (scales {','.join(f'{s:g}' for s in config.scales)}, subpixel {config.subpixel})"
    print(f"weights: {extractor.weights_description}")
    print(f"path:    {describe_path(extractor)}, threshold {config.detection_threshold}, NMS radius {config.nms_radius}, "
          f"max keypoints {config.max_keypoints}, torch threads {torch.get_num_threads()}")
    print(f"pairs:   {PAIRS}, the demo's --seed {seeds[0]}..{seeds[-1]}")
    print(f"machine: {machine}")
    print(f"date:    {date}\ncommand: {command}")

    windows = {"cornersubpix": args.cornersubpix_window, "softargmax": args.softargmax_window}
    results = measure(extractor, pairs, args.refine, args.ransac_orders, args.within, label, windows)
    print_tables(results, seeds, args.ransac_orders, args.within)

    report = {
        "date": date,
        "command": command,
        "machine": machine,
        "machine_record": machine_record(str(extractor.device)),
        "weights": extractor.weights_description,
        "settings": extractor_settings(extractor, weights=args.weights),
        "pairs": {"source": PAIRS, "seeds": seeds},
        "scikit_image": _version("scikit-image"),
        "within_px": args.within,
        "ransac_orders": args.ransac_orders,
        "ransac_threshold_px": demo.RANSAC_THRESHOLD,
        "refinements": {refine: {"half_window": windows[refine], **(CORNER_SUBPIX if refine == "cornersubpix" else {})}
                        for refine in args.refine if refine != "none"},
        "load_average": os.getloadavg(),
        "methods": _json_ready(results),
    }
    try:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    except OSError as error:
        print(f"error: cannot write {args.json}: {error}", file=sys.stderr)
        return 1
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
