"""Visual-odometry evaluation of features against TUM-format ground truth, with ORB beside it,
without ROS (``python -m superpoint_ros.vo`` is its command line; the campaign calls it directly).

The same matching and pose code as the tracker node (:mod:`.tracking`): for every frame gap ``g``
each pair (i, i + g) is matched (SuperPoint: :func:`~.tracking.match_features` on the device; ORB:
OpenCV's 1500-feature ORB, brute-force Hamming with cross check, i.e. mutual nearest neighbours) and
goes through :func:`~.tracking.estimate_relative_pose`. Errors per pair:

- rotation error: angle of ``R_est R_gt^T`` in degrees;
- translation-direction error: angle between the estimated unit translation and the ground-truth
  one (both ``t`` of ``x_cur = R x_prev + t``), degrees; monocular pairs have no scale.

Ground truth: ``timestamp tx ty tz qx qy qz qw`` lines (T_world_cam), each frame associated with the
nearest ground-truth stamp (within ``max_time_difference``). Frame stamps come from image file names
(``1311868169.163498.png``) or a bag's header stamps; without stamps frames are numbered.

:func:`evaluate_odometry` writes into ``output``: ``pairs.csv`` (one line per method, gap, pair and
RANSAC order), ``summary.json`` and ``summary.md`` (medians per method and gap, settings, timings, the machine),
``trajectory.png`` (per method and gap, the pairs (0, g), (g, 2g)... chained from frame 0's true pose,
each step scaled to the ground truth's step length since monocular steps have none; and the per-pair
errors). :func:`run` does the same for a folder of images and a camera file.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..common.machine import describe_machine, machine_record
from ..data.images import IMAGE_SUFFIXES, read_gray
from .camera import CameraModel
from .tracking import (
    FrameTracker,
    RelativePose,
    Status,
    TrackerConfig,
    angle_between_deg,
    estimate_relative_pose,
    match_features,
    rotation_angle_deg,
)
from .transforms import quaternion_to_matrix

METHODS = ("superpoint", "orb")


class VOInputError(ValueError):
    """Bad input to the runner (missing files, no intrinsics, no stamps matching the ground truth...)."""


@dataclass
class Frame:
    stamp: float | None
    image: np.ndarray  # gray uint8
    name: str


# ---------------------------------------------------------------- ground truth


def load_tum_trajectory(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """TUM ``timestamp tx ty tz qx qy qz qw`` file -> stamps (M,), poses (M, 4, 4) T_world_cam."""
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        values = line.replace(",", " ").split()
        if len(values) != 8:
            raise VOInputError(f"{path}:{number}: expected 8 values 'timestamp tx ty tz qx qy qz qw', got {len(values)}")
        t, tx, ty, tz, qx, qy, qz, qw = (float(v) for v in values)
        T = np.eye(4)
        T[:3, :3] = quaternion_to_matrix(qx, qy, qz, qw)
        T[:3, 3] = (tx, ty, tz)
        stamps.append(t)
        poses.append(T)
    if not stamps:
        raise VOInputError(f"{path}: no poses found")
    order = np.argsort(stamps)
    return np.asarray(stamps)[order], np.stack(poses)[order]


def associate(stamps: list[float | None], reference: np.ndarray, max_difference: float) -> list[int | None]:
    """Index of the nearest reference stamp for each stamp, or None when none lies within ``max_difference``."""
    out: list[int | None] = []
    for stamp in stamps:
        if stamp is None:
            out.append(None)
            continue
        j = int(np.searchsorted(reference, stamp))
        candidates = [k for k in (j - 1, j) if 0 <= k < len(reference)]
        best = min(candidates, key=lambda k: abs(reference[k] - stamp))
        out.append(best if abs(reference[best] - stamp) <= max_difference else None)
    return out


# ---------------------------------------------------------------- input


def _stamp_from_name(name: str) -> float | None:
    try:
        return float(Path(name).stem)
    except ValueError:
        return None


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def read_image_folder(folder: Path, start: int = 0, max_frames: int | None = None) -> list[Frame]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    stamped = [(_stamp_from_name(p.name), p) for p in files]
    if all(s is not None for s, _ in stamped):
        stamped.sort(key=lambda item: item[0])
    stamped = stamped[start : None if max_frames is None else start + max_frames]
    frames = []
    for stamp, path in stamped:
        image = read_gray(path)
        if image is None:
            raise VOInputError(f"{path}: cannot read the image")
        frames.append(Frame(stamp, image, path.name))
    return frames


# ---------------------------------------------------------------- features and pairs


@dataclass
class MethodFeatures:
    keypoints: list[np.ndarray] = field(default_factory=list)
    descriptors: list[Any] = field(default_factory=list)  # torch tensors on the device (SuperPoint), uint8 (ORB)
    scores: list[Any] = field(default_factory=list)
    extract_seconds: float = 0.0


def superpoint_features(frames: list[Frame], extractor: Any, progress: bool = True) -> MethodFeatures:
    from tqdm import tqdm

    out = MethodFeatures()
    for frame in tqdm(frames, desc="SuperPoint", unit="frame", disable=not progress, dynamic_ncols=True):
        t0 = time.perf_counter()
        features = extractor(frame.image)
        keypoints = features.keypoints.cpu().numpy()  # synchronises the device, so the time is complete
        out.extract_seconds += time.perf_counter() - t0
        out.keypoints.append(keypoints)
        out.descriptors.append(features.descriptors)
        out.scores.append(features.scores)
    return out


def orb_features(frames: list[Frame], progress: bool = True) -> MethodFeatures:
    from tqdm import tqdm

    from superpoint_training.evaluation.baselines import detect_and_describe

    out = MethodFeatures()
    for frame in tqdm(frames, desc="ORB", unit="frame", disable=not progress, dynamic_ncols=True):
        t0 = time.perf_counter()
        features = detect_and_describe(frame.image, "orb")
        out.extract_seconds += time.perf_counter() - t0
        out.keypoints.append(features.keypoints)
        out.descriptors.append(features.descriptors)
        out.scores.append(features.scores)
    return out


def match_orb(descriptors0: np.ndarray, descriptors1: np.ndarray) -> np.ndarray:
    """Brute-force Hamming matching with cross check (mutual nearest neighbours): (K, 2) indices."""
    if len(descriptors0) == 0 or len(descriptors1) == 0:
        return np.zeros((0, 2), np.int64)
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(descriptors0, descriptors1)
    return np.array([(m.queryIdx, m.trainIdx) for m in matches], np.int64).reshape(-1, 2)


def match_pair(method: str, features: MethodFeatures, i: int, j: int, config: TrackerConfig) -> np.ndarray:
    if method == "orb":
        return match_orb(features.descriptors[i], features.descriptors[j])
    matches, _ = match_features(features.descriptors[i], features.descriptors[j], config)
    return matches.cpu().numpy()


def relative_groundtruth(T_world_0: np.ndarray, T_world_1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R, t of ``x_1 = R x_0 + t`` (points from camera 0 to camera 1) from two world poses."""
    T_1_0 = np.linalg.inv(T_world_1) @ T_world_0
    return T_1_0[:3, :3], T_1_0[:3, 3]


def evaluate_pairs(
    method: str,
    features: MethodFeatures,
    frames: list[Frame],
    gaps: list[int],
    camera: CameraModel,
    config: TrackerConfig,
    gt_poses: list[np.ndarray | None],
    ransac_orders: int = 1,
) -> tuple[list[dict], dict[tuple[int, int], RelativePose], float]:
    """Match and estimate every pair (i, i + gap); returns rows, the poses by pair (the first order's),
    and seconds spent (the first order's). With ``ransac_orders`` N > 1 each pair's pose is estimated
    N times, the matches in their matching order and then shuffled by seeds 1..N-1 (OpenCV's RANSAC
    samples depend on the order): one row per pair and order."""
    rows, poses = [], {}
    seconds = 0.0
    for gap in gaps:
        for i in range(len(frames) - gap):
            j = i + gap
            t0 = time.perf_counter()
            matched = match_pair(method, features, i, j, config)
            for order in range(ransac_orders):
                matches = matched[np.random.default_rng(order).permutation(len(matched))] if order else matched
                pose = estimate_relative_pose(
                    features.keypoints[i][matches[:, 0]], features.keypoints[j][matches[:, 1]], camera, config
                )
                if order == 0:
                    seconds += time.perf_counter() - t0
                    poses[(i, j)] = pose
                rows.append(_pair_row(method, gap, order, frames, i, j, features, pose, gt_poses))
    return rows, poses, seconds


def _pair_row(method: str, gap: int, order: int, frames: list[Frame], i: int, j: int, features: MethodFeatures,
              pose: RelativePose, gt_poses: list[np.ndarray | None]) -> dict:
    """One line of pairs.csv: the pair, its counts and status, its errors against the ground truth."""
    row = {
        "method": method,
        "gap": gap,
        "order": order,
        "frame0": i,
        "frame1": j,
        "stamp0": frames[i].stamp,
        "stamp1": frames[j].stamp,
        "keypoints0": len(features.keypoints[i]),
        "keypoints1": len(features.keypoints[j]),
        "matches": pose.num_matches,
        "inliers": pose.num_inliers,
        "parallax_px": pose.parallax_px,
        "status": pose.status,
        "rotation_error_deg": float("nan"),
        "translation_direction_error_deg": float("nan"),
        "gt_rotation_deg": float("nan"),
        "gt_translation_m": float("nan"),
    }
    if gt_poses[i] is not None and gt_poses[j] is not None:
        R_gt, t_gt = relative_groundtruth(gt_poses[i], gt_poses[j])
        row["gt_rotation_deg"] = rotation_angle_deg(R_gt)
        row["gt_translation_m"] = float(np.linalg.norm(t_gt))
        if pose.status == Status.OK:
            row["rotation_error_deg"] = rotation_angle_deg(pose.R @ R_gt.T)
            row["translation_direction_error_deg"] = angle_between_deg(pose.t, t_gt)
    return row


def summarise(rows: list[dict], method: str, gap: int) -> dict:
    """One method and gap: pair counts and statuses (of the first RANSAC order), the median errors
    over the pairs (with several orders: each order's median, then their mean), mean counts."""
    selected = [r for r in rows if r["method"] == method and r["gap"] == gap]
    orders = sorted({r["order"] for r in selected})
    first = [r for r in selected if r["order"] == 0]
    statuses: dict[str, int] = {}
    for r in first:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1

    def median_of(chosen: list[dict], key: str) -> float | None:
        values = np.array([r[key] for r in chosen], np.float64)
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else None

    def median(key: str) -> float | None:
        per_order = [median_of([r for r in selected if r["order"] == o], key) for o in orders]
        per_order = [m for m in per_order if m is not None]
        return float(np.mean(per_order)) if per_order else None

    def mean(key: str) -> float | None:
        return float(np.mean([r[key] for r in selected])) if selected else None

    return {
        "pairs": len(first),
        "ok": statuses.get(Status.OK, 0),
        "statuses": statuses,
        "median_rotation_error_deg": median("rotation_error_deg"),
        "median_translation_direction_error_deg": median("translation_direction_error_deg"),
        "mean_matches": mean("matches"),
        "mean_inliers": mean("inliers"),
        "median_gt_rotation_deg": median("gt_rotation_deg"),
        "median_gt_translation_m": median("gt_translation_m"),
    }


def chain_trajectory(
    poses: dict[tuple[int, int], RelativePose], count: int, gt_poses: list[np.ndarray | None], gap: int = 1
) -> np.ndarray:
    """Camera positions in the world frame of frames 0, gap, 2 gap... chained from that gap's pairs.

    Anchored at frame 0's ground truth; each step takes the ground truth's step length (monocular
    steps have none); a step without a pose (lost) leaves the camera where it was.
    """
    T = gt_poses[0].copy() if gt_poses and gt_poses[0] is not None else np.eye(4)
    positions = [T[:3, 3].copy()]
    for i in range(0, count - gap, gap):
        pose = poses.get((i, i + gap))
        if pose is not None and pose.has_pose and pose.status == Status.OK:
            step = pose.T_prev_cur.copy()
            if gt_poses[i] is not None and gt_poses[i + gap] is not None:
                step[:3, 3] *= np.linalg.norm(gt_poses[i + gap][:3, 3] - gt_poses[i][:3, 3])
            T = T @ step
        positions.append(T[:3, 3].copy())
    return np.array(positions)


def plot(output: Path, trajectories: dict[str, np.ndarray], rows: list[dict], gaps: list[int], title: str) -> Path | None:
    """trajectory.png; None (after one line saying so) when matplotlib is not installed."""
    from superpoint_training.common.viz import import_pyplot

    plt = import_pyplot("trajectory.png")
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for name, xyz in trajectories.items():
        method, _, gap = name.partition(" gap ")
        if name == "ground truth":
            style = {"color": "k", "linestyle": "-"}
        else:
            style = {"color": f"C{METHODS.index(method)}", "linestyle": "-" if gap == str(gaps[0]) else "--", "marker": "."}
        axes[0].plot(xyz[:, 0], xyz[:, 1], label=name, **style)
    start = next(iter(trajectories.values()))[0]
    axes[0].plot(start[0], start[1], "ks")
    axes[0].set(xlabel="x (m)", ylabel="y (m)", title="trajectory, top view (chained pairs, GT step lengths)")
    axes[0].axis("equal")
    axes[0].legend()
    for axis, key, label in (
        (axes[1], "rotation_error_deg", "relative rotation error (deg)"),
        (axes[2], "translation_direction_error_deg", "translation direction error (deg)"),
    ):
        for m, method in enumerate(METHODS):
            for g, gap in enumerate(gaps):
                sel = [r for r in rows if r["method"] == method and r["gap"] == gap and r["order"] == 0]
                if sel:
                    axis.plot(
                        [r["frame0"] for r in sel],
                        [r[key] for r in sel],
                        marker="o." [g % 2],
                        linestyle="-" if g == 0 else "--",
                        color=f"C{m}",
                        label=f"{method} gap {gap}",
                    )
        axis.set(xlabel="first frame of the pair", ylabel=label, title=label)
        axis.set_yscale("symlog", linthresh=1.0)
        axis.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = output / "trajectory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _orders_text(orders: int) -> str:
    if orders == 1:
        return "1 RANSAC order per pair (the matches in their matching order)"
    return (f"{orders} RANSAC orders per pair (the matches in their matching order, then shuffled by seeds 1-{orders - 1}); "
            "each median below is the mean of the orders' medians")


def summary_markdown(summary: dict) -> str:
    lines = [
        "# Visual-odometry check",
        "",
        f"- command: `{summary['command']}`",
        f"- date: {summary['date']}; machine: {summary['machine']}; device: {summary['device']}",
        f"- source: {summary['source']} ({summary['frames']} frames); ground truth: {summary['groundtruth']}",
        f"- SuperPoint weights: {summary['weights']}; max_keypoints {summary['max_keypoints']}; inference: "
        f"{summary['extractor']['backend']} backend, {summary['extractor']['precision']}",
        f"- matching / pose settings: {summary['settings']}",
        f"- essential matrix: cv2.findEssentialMat RANSAC then cv2.recoverPose, {_orders_text(summary['ransac_orders'])}",
        "- ORB: OpenCV ORB, 1500 features, brute-force Hamming with cross check, same essential-matrix code",
        "",
        "Medians over the pairs whose pose was estimated (status ok); rotation error = angle of R_est R_gt^T,",
        "translation-direction error = angle between estimated and true unit translations.",
        "",
        "| method | gap | pairs | ok | median rot. err. (deg) | median transl. dir. err. (deg) | mean matches | mean inliers | GT rot. (deg) | GT transl. (m) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, data in summary["methods"].items():
        for gap, s in data["gaps"].items():
            lines.append(
                f"| {method} | {gap} | {s['pairs']} | {s['ok']} | {_fmt(s['median_rotation_error_deg'])} | "
                f"{_fmt(s['median_translation_direction_error_deg'])} | {_fmt(s['mean_matches'], 0)} | "
                f"{_fmt(s['mean_inliers'], 0)} | {_fmt(s['median_gt_rotation_deg'])} | {_fmt(s['median_gt_translation_m'], 3)} |"
            )
    lines += ["", "| method | extraction ms/frame | matching + pose ms/pair |", "|---|---|---|"]
    for method, data in summary["methods"].items():
        lines.append(f"| {method} | {_fmt(data['extract_ms_per_frame'], 1)} | {_fmt(data['match_pose_ms_per_pair'], 1)} |")
    tracker = summary.get("tracker")
    if tracker:
        lines += [
            "",
            f"SuperPoint FrameTracker over the sequence (gap 1): {_fmt(tracker['ms_per_frame'], 1)} ms per frame "
            f"(matching + tracks + pose, {summary['device']}), mean track length {_fmt(tracker['mean_track_length'], 1)} "
            f"frames, statuses {tracker['statuses']}.",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class VOResult:
    """What :func:`evaluate_odometry` measured (``summary``: the content of summary.json) and wrote."""

    summary: dict
    output: Path
    written: list[str]

    @property
    def markdown(self) -> str:
        return summary_markdown(self.summary)


def evaluate_odometry(
    frames: list[Frame],
    camera: CameraModel,
    extractor: Any,
    output: str | Path,
    *,
    gaps: Sequence[int] = (1, 5),
    config: TrackerConfig | None = None,
    groundtruth: str | Path | None = None,
    max_time_difference: float = 0.02,
    orb: bool = True,
    progress: bool = True,
    source: str = "",
    command: str = "",
    extractor_record: dict | None = None,
    ransac_orders: int = 1,
) -> VOResult:
    """SuperPoint (``extractor``, an :class:`~superpoint_training.Extractor`) and ORB relative poses
    over ``frames`` at each gap, against ``groundtruth`` when given; writes the files listed in the
    module docstring into ``output``. ``ransac_orders``: estimate each pair's pose that many times
    with the matches in different orders and report the mean of the orders' medians (one order moves
    the median of 15-20 pairs by a quarter). Bad input raises :class:`VOInputError`."""
    import torch

    gaps = _checked_gaps(frames, camera, extractor, gaps, ransac_orders)
    config = config or TrackerConfig(max_frame_gap=None, frame_gap_periods=None)
    gt_poses = groundtruth_poses(frames, groundtruth, max_time_difference)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    features = {"superpoint": superpoint_features(frames, extractor, progress)}
    if orb:
        features["orb"] = orb_features(frames, progress)
    rows: list[dict] = []
    summary_methods: dict[str, dict] = {}
    trajectories: dict[str, np.ndarray] = {}
    if all(p is not None for p in gt_poses):
        trajectories["ground truth"] = np.array([p[:3, 3] for p in gt_poses])
    for method, feats in features.items():
        if config.bucketing and method == "superpoint":
            feats = _bucketed(feats, frames, config, extractor.device)
        method_rows, poses, seconds = evaluate_pairs(method, feats, frames, gaps, camera, config, gt_poses, ransac_orders)
        rows += method_rows
        summary_methods[method] = {
            "gaps": {str(g): summarise(method_rows, method, g) for g in gaps},
            "extract_ms_per_frame": 1e3 * feats.extract_seconds / len(frames),
            "match_pose_ms_per_pair": 1e3 * seconds / max(1, len(method_rows)),
        }
        for gap in gaps:
            if gap < len(frames):
                trajectories[f"{method} gap {gap}"] = chain_trajectory(poses, len(frames), gt_poses, gap)
    tracker_summary = _run_tracker(features["superpoint"], frames, camera, config, extractor.device)
    summary = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(str(extractor.device)),
        "machine_record": machine_record(str(extractor.device)),  # CPU flags, library versions, GPU
        "device": str(extractor.device) + (f" ({torch.cuda.get_device_name()})" if extractor.device.type == "cuda" else ""),
        "source": source,
        "frames": len(frames),
        "groundtruth": str(groundtruth) if groundtruth else "none",
        "weights": extractor.weights_description,
        "max_keypoints": extractor.config.max_keypoints,
        "extractor": extractor_record or {"backend": extractor.backend, "precision": extractor.precision},
        "camera": {"K": camera.K.tolist(), "distortion": camera.distortion.tolist(), "model": camera.distortion_model},
        "settings": {k: v for k, v in asdict(config).items() if k not in ("max_frame_gap", "frame_gap_periods")},
        "ransac_orders": ransac_orders,  # findEssentialMat runs per pair; OpenCV's RANSAC samples depend on the matches' order
        "methods": summary_methods,
        "tracker": tracker_summary,
    }
    return VOResult(summary, output, write_outputs(output, rows, summary, trajectories, gaps))


def _checked_gaps(frames: list[Frame], camera: CameraModel, extractor: Any, gaps: Sequence[int],
                  ransac_orders: int) -> list[int]:
    """The sorted distinct gaps, after the checks of :func:`evaluate_odometry`'s input
    (:class:`VOInputError` naming what is wrong)."""
    problem = camera.problem()
    if problem:
        raise VOInputError(f"unusable intrinsics: {problem}")
    if len(frames) < 2:
        raise VOInputError(f"need at least 2 frames, got {len(frames)}")
    gaps = sorted(set(gaps))
    if min(gaps) < 1:
        raise VOInputError(f"gaps must be positive, got {gaps}")
    if ransac_orders < 1:
        raise VOInputError(f"ransac_orders must be at least 1, got {ransac_orders}")
    if extractor.descriptor_dim == 0:
        raise VOInputError(f"{extractor.weights_description} have no descriptor head (MagicPoint): nothing to match")
    return gaps


def groundtruth_poses(
    frames: list[Frame], groundtruth: str | Path | None, max_time_difference: float
) -> list[np.ndarray | None]:
    """Each frame's true pose (4x4 T_world_cam) from a TUM trajectory, None where no stamp is close
    enough (all None without ``groundtruth``)."""
    if not groundtruth:
        return [None] * len(frames)
    gt_stamps, gt_all = load_tum_trajectory(groundtruth)
    index = associate([f.stamp for f in frames], gt_stamps, max_time_difference)
    poses = [None if k is None else gt_all[k] for k in index]
    if all(p is None for p in poses):
        raise VOInputError(f"{groundtruth}: no ground-truth stamp within {max_time_difference} s of any frame stamp")
    return poses


def write_outputs(output: Path, rows: list[dict], summary: dict, trajectories: dict[str, np.ndarray],
                  gaps: list[int]) -> list[str]:
    """pairs.csv, summary.json, summary.md and the trajectory plot (when matplotlib is installed)."""
    with open(output / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (output / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    picture = plot(output, trajectories, rows, gaps, f"{summary['source']} - {summary['weights']} - {summary['date']}")
    return ["summary.md", "summary.json", "pairs.csv"] + ([picture.name] if picture else [])


def run(
    images: str | Path,
    camera: str | Path,
    output: str | Path,
    *,
    weights: str = "default",
    device: str = "auto",
    max_keypoints: int = 1000,
    groundtruth: str | Path | None = None,
    gaps: Sequence[int] = (1, 5),
    orb: bool = True,
    progress: bool = True,
) -> VOResult:
    """:func:`evaluate_odometry` for a folder of images (stamps from their names) and a camera file
    (``fx fy cx cy [distortion]`` text or ROS calibration YAML), with the command's extractor defaults
    (``auto`` backend and precision: the fastest path that keeps the accuracy bounds)."""
    from ..model.extractor import Extractor

    images = Path(images)
    if not images.is_dir():
        raise VOInputError(f"{images}: not a folder of images")
    frames = read_image_folder(images)
    extractor = Extractor(weights, device, max_keypoints=max_keypoints, backend="auto", precision="auto")
    return evaluate_odometry(
        frames, CameraModel.from_file(camera), extractor, output, gaps=gaps, groundtruth=groundtruth, orb=orb,
        progress=progress, source=str(images), command=f"superpoint_training.odometry.evaluation.run({images})",
    )  # fmt: skip


def _bucketed(feats: MethodFeatures, frames: list[Frame], config: TrackerConfig, device: Any) -> MethodFeatures:
    import torch

    from .tracking import bucket_indices

    out = MethodFeatures(extract_seconds=feats.extract_seconds)
    for frame, kp, desc, scores in zip(frames, feats.keypoints, feats.descriptors, feats.scores, strict=True):
        keep = bucket_indices(
            torch.from_numpy(kp).to(device),
            scores,
            frame.image.shape[:2],
            (config.bucket_rows, config.bucket_cols),
            config.bucket_max_per_cell,
        )
        out.keypoints.append(kp[keep.cpu().numpy()])
        out.descriptors.append(desc[keep])
        out.scores.append(scores[keep])
    return out


def _run_tracker(feats: MethodFeatures, frames: list[Frame], camera: CameraModel, config: TrackerConfig, device: Any) -> dict:
    """The tracker over the SuperPoint features in order (gap 1): time per frame, track lengths, statuses."""
    import torch

    tracker = FrameTracker(config, device)
    statuses: dict[str, int] = {}
    seconds = 0.0
    ended_lengths: list[int] = []
    for frame, kp, desc, scores in zip(frames, feats.keypoints, feats.descriptors, feats.scores, strict=True):
        t0 = time.perf_counter()
        result = tracker.process(kp, desc, camera, stamp=None, scores=scores, image_size=frame.image.shape[:2])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t0
        statuses[result.status] = statuses.get(result.status, 0) + 1
        ended_lengths += result.lengths.tolist()
    return {
        "ms_per_frame": 1e3 * seconds / len(frames),
        "mean_track_length": float(np.mean(ended_lengths)) if ended_lengths else None,
        "statuses": statuses,
    }
