"""Aggregates over pairs and the Markdown / JSON report laid out like the reference README's tables."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..common.machine import describe_machine, machine_record
from ..model.extractor import Extractor
from .methods import Protocol, opencv_version
from .metrics import CORRECTNESS_THRESHOLDS, precision_recall
from .presets import EvaluationPreset

KIND_COLUMNS = ("illumination", "viewpoint", "all")
_EXTRACTOR_DEFAULTS = inspect.signature(Extractor).parameters
SUPERPOINT_INFERENCE = (f"{_EXTRACTOR_DEFAULTS['backend'].default} backend in "
                        f"{_EXTRACTOR_DEFAULTS['precision'].default}")  # build_methods keeps the defaults
PER_SEQUENCE_ROWS = 60  # report.md lists each sequence up to this many (full HPatches: 116, see report.json)


def finite_or_none(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else (value if math.isfinite(value) else None)


PROTOCOL_METRICS = {
    "detector": ("repeatability", "localization_error"),
    "descriptor": tuple(f"correct_e{e}" for e in CORRECTNESS_THRESHOLDS) + ("matching_score", "nn_map"),
}


METRIC_TITLES = {
    "repeatability": "repeatability",
    "localization_error": "localisation error (px)",
    "correct_e1": "homography correctness, e = 1",
    "correct_e3": "homography correctness, e = 3",
    "correct_e5": "homography correctness, e = 5",
    "matching_score": "matching score",
    "nn_map": "nearest-neighbour mAP",
}


def aggregate(records: list[dict], metrics: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric over the pairs of each kind and over all pairs (pairs without a value
    skipped; a failed homography counts as incorrect, not as missing)."""
    out = {}
    for metric in metrics:
        out[metric] = {}
        for kind in KIND_COLUMNS:
            values = [r[metric] for r in records if (kind == "all" or r["kind"] == kind) and r.get(metric) is not None]
            out[metric][kind] = float(np.mean(values)) if values else None
    return out


def pooled_curve(entries: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> dict[str, list[float]]:
    """Precision-recall over all matches of a set of pairs, subsampled to about ``points`` points."""
    if not entries:
        return {"precision": [], "recall": []}
    distances = np.concatenate([d for d, _ in entries]).astype(np.float64)
    correct = np.concatenate([c for _, c in entries])
    if len(distances) == 0:
        return {"precision": [], "recall": []}
    precision, recall = precision_recall(distances, correct)
    step = max(1, len(precision) // points)
    index = np.unique(np.r_[np.arange(0, len(precision), step), len(precision) - 1])
    return {"precision": precision[index].round(5).tolist(), "recall": recall[index].round(5).tolist()}


def format_value(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_report(report: dict) -> str:
    """report.md: the reference README's tables, then every choice made, then the plots."""
    s = report["settings"]
    lines = ["# HPatches evaluation", ""]
    lines += [
        f"- Dataset: `{s['dataset']}`: {s['dataset_description']}",
        f"- Date: {report['date']}; machine: {report['machine']}; SuperPoint device: {s['device']}",
        f"- Command: `{report['command']}`",
    ]
    if "descriptor" in s["protocols"]:
        orders = s["protocols"]["descriptor"]["ransac_orders"]
        lines.append(f"- Homography estimation: cv2.findHomography RANSAC, {orders} order{'s' if orders > 1 else ''} "
                     "of the matches per pair (see Settings)")
    for label, weights in s["weights"].items():
        lines.append(f"- {label}: {weights}")
    lines.append("")
    aggregates = report["aggregates"]
    if "detector" in aggregates:
        p = s["protocols"]["detector"]
        where = f"{_size_text(s, p)}, NMS {p['nms_radius']}, {p['top_k']} points in the shared view"
        for metric, digits in (("repeatability", 3), ("localization_error", 2)):
            lines += [
                f"## Detectors: {METRIC_TITLES[metric]}",
                "",
                f"{where}, distance {p['distance']:g} px.",
                "",
            ]
            lines += _kind_table(aggregates["detector"], metric, digits)
    if "descriptor" in aggregates:
        p = s["protocols"]["descriptor"]
        where = f"{_size_text(s, p)}, NMS {p['nms_radius']}, up to {p['top_k']} points in the shared view"
        lines += ["## Descriptors: homography estimation, e = 3", "", f"{where}.", ""]
        lines += _kind_table(aggregates["descriptor"], "correct_e3", 3)
        lines += ["## Homography estimation, all changes, e = 1 / 3 / 5", ""]
        lines += ["| | " + " | ".join(f"e = {e}" for e in CORRECTNESS_THRESHOLDS) + " |"]
        lines += ["|---|" + "---|" * len(CORRECTNESS_THRESHOLDS)]
        for method, values in aggregates["descriptor"].items():
            cells = [format_value(values[f"correct_e{e}"]["all"]) for e in CORRECTNESS_THRESHOLDS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        per_sequence = per_sequence_table(report)
        if 2 < len(per_sequence) <= 2 + PER_SEQUENCE_ROWS:  # a header, a rule, then a row per sequence
            lines += ["## Homography estimation per sequence, e = 3", ""] + per_sequence + [""]
        for metric in ("matching_score", "nn_map"):
            lines += [
                f"## Descriptors: {METRIC_TITLES[metric]}",
                "",
                f"{where}, correct within {p['distance']:g} px.",
                "",
            ]
            lines += _kind_table(aggregates["descriptor"], metric, 3)
    lines += ["## Settings", ""] + [f"- {line}" for line in report["choices"]] + [""]
    if report["skipped"]:
        lines += ["## Skipped sequences", ""] + [f"- {reason}" for reason in report["skipped"]] + [""]
    if report.get("skipped_methods"):
        lines += ["## Methods left out of a protocol", ""] + [f"- {r}" for r in report["skipped_methods"]] + [""]
    lines += ["## Timings", ""]
    lines += [f"- {name}: {seconds:.1f} s" for name, seconds in report["timings"].items()] + [""]
    if report["plots"]:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]] + [""]
    lines += [
        "## Reading this report",
        "",
        "Each figure is a mean over pairs (1, k) of the sequences of that kind; `all` pools both kinds.",
        "`report.json` holds the same aggregates and one record per (sequence, pair, method, protocol) with",
        "every metric of that pair (corner_error in px, n0/n1 points in the shared view, n_matches,",
        "n_correct), to find the pairs behind a number. Repeatability and homography correctness follow",
        "rpautrat's evaluation code; matching score and NN mAP are not in the reference (see Settings).",
        "In the match pictures, green lines are matches within 3 px of the true reprojection, red ones are wrong;",
        "the pairs drawn are the last pair (1-6 on HPatches, the largest change) of the first sequences.",
        "",
    ]
    return "\n".join(lines)


def per_sequence_table(report: dict) -> list[str]:
    """Homography correctness at e=3 of each method on each sequence (descriptor protocol): where a
    method loses (a large rotation, a zoom) shows here and hides in the means."""
    records = [r for r in report.get("pairs", []) if r.get("protocol") == "descriptor"]
    methods = list(dict.fromkeys(r["method"] for r in records))
    sequences = sorted({r["sequence"] for r in records})
    correct: dict[tuple[str, str], list[float]] = {}  # (sequence, method) -> e=3 per pair, one pass
    for r in records:
        if r.get("correct_e3") is not None:
            correct.setdefault((r["sequence"], r["method"]), []).append(float(r["correct_e3"]))
    lines = ["| sequence | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for sequence in sequences:
        cells = [f"{np.mean(correct[sequence, m]):.2f}" if (sequence, m) in correct else "-" for m in methods]
        lines.append(f"| {sequence} | " + " | ".join(cells) + " |")
    return lines


def _size_text(settings: dict, protocol: dict) -> str:
    if settings["resize"] == "reference":
        return f"images at {protocol['size'][0]}x{protocol['size'][1]}"
    if settings["resize"] == "short_side":
        return f"short side {protocol['short_side']} px"
    return "images at their own size"


def _kind_table(aggregates: dict, metric: str, digits: int) -> list[str]:
    lines = ["| | illumination | viewpoint | all |", "|---|---|---|---|"]
    for method, values in aggregates.items():
        lines.append(f"| {method} | " + " | ".join(format_value(values[metric][k], digits) for k in KIND_COLUMNS) + " |")
    return lines + [""]


def describe_choices(protocols: list[Protocol], dataset_resize: str, preset: EvaluationPreset,
                     detection_threshold: float | None) -> list[str]:
    """Every choice that shapes the numbers, written into the report, the preset's first."""
    choices = [f"preset {preset.name}: {preset.summary}"]
    for p in protocols:
        size = {
            "reference": f"images resized keeping the aspect ratio to cover {p.size[0]}x{p.size[1]} (bilinear), then "
            "centre-cropped to it; H adjusted with each image's own scale and crop offset (the reference "
            "scaled H by image 1's factor and ignored the crop)",
            "short_side": f"short side resized to {p.short_side} px (area interpolation), no crop, H adjusted",
            "none": "images at their own size, no resizing",
        }[dataset_resize]
        choices.append(f"{p.name} protocol: {size}")
        choices.append(preset.nms_line(p))
    choices += [
        "shared view: points of image 1 that H maps inside image k, points of image k that H^-1 maps inside image 1",
        "repeatability: (count1 + count2) / (N1 + N2), a point counts when its nearest warped neighbour lies "
        "within 3 px (rpautrat's compute_repeatability); localisation error: mean of those distances (px)",
        "homography: cross-checked brute-force matching (L2 for SuperPoint and SIFT, Hamming for ORB), "
        "cv2.findHomography RANSAC (reprojection threshold 3 px), mean error of the four warped corners of "
        "image 1 <= e; fewer than 4 matches or no estimate counts as incorrect"
        + ("; one RANSAC run on the matches in their own order (the reference's; OpenCV's RANSAC samples depend "
           "on the order, --ransac-orders averages over more)" if protocols[0].ransac_orders <= 1 else
           f"; correctness is the mean over {protocols[0].ransac_orders} orders of the matches (the matches' own "
           "order, then shuffles with seeds 1..N-1: OpenCV's RANSAC samples depend on the order); corner errors "
           "are those of the matches' own order"),
        "matching score: cross-checked matches within 3 px of the true reprojection over the mean number of "
        "points of the two images in the shared view",
        "NN mAP: average precision of the cross-checked nearest-neighbour matches ranked by descriptor distance, "
        "a match correct within 3 px; mean over pairs. The precision-recall plot pools all matches of a kind",
        preset.superpoint_line(detection_threshold),
        f"SuperPoint inference: the network run by the {SUPERPOINT_INFERENCE} (the Extractor's defaults: the "
        "evaluation has no other)",
        f"classical: Harris cornerHarris(4, 3, 0.04); Shi-Tomasi goodFeaturesToTrack(600, 1e-4, 5) scored by "
        f"min-eigenvalue quality; FAST threshold 10; SIFT and ORB nfeatures 1500 with their own keypoints "
        f"(no extra NMS); OpenCV {opencv_version()}",
        "images read in gray (cv2.IMREAD_GRAYSCALE)",
    ]
    return choices


def resolved_device(device: str) -> str:
    """``auto`` as the evaluation resolves it (CUDA when available), other names as they are."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def machine_description(device: str) -> str:
    """The machine in one line (:func:`~superpoint_training.common.machine.describe_machine`: CPU,
    cores, flags, GPU, library versions)."""
    return describe_machine(resolved_device(device))


def write_report(report: dict, output: Path) -> None:
    """OUTPUT/report.json and OUTPUT/report.md; the json gains the full machine record
    (``machine_record``: CPU flags, native bf16, library versions, GPU) when the caller gave none."""
    report.setdefault("machine_record", machine_record(resolved_device(report["settings"]["device"])))
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=1))
    (output / "report.md").write_text(markdown_report(report))
