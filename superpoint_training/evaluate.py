"""HPatches evaluation of SuperPoint and classical baselines: export once, metrics from the cache,
a report (Markdown and JSON) laid out like the reference README's tables, and plots.

The reference's two protocols are presets:

- ``detector``: images at 240x320, NMS radius 4, the 300 best points in the shared view;
  repeatability and localisation error (distance 3 px).
- ``descriptor``: images at 480x640, NMS radius 8, up to 1000 points in the shared view;
  homography correctness at e = 1, 3, 5, matching score and nearest-neighbour mAP.

Predictions go to ``OUTPUT/cache/<protocol>/<method>-<settings hash>/<sequence>/<k>.npz`` (one file
per image, so image 1 of a sequence is computed once for its five pairs); a run with the same
settings reuses them. SuperPoint runs through :class:`superpoint_training.Extractor` (batched,
on the GPU when there is one), the classical methods through OpenCV on CPU threads.

Examples::

    python -m superpoint_training.evaluate --dataset data/hpatches-sequences-release --output results/hpatches
    python -m superpoint_training.evaluate --dataset data/hpatches-sequences-release --methods superpoint,sift \\
        --protocol descriptor --weights superpoint_v6_from_tf --weights superpoint_ros --output results/v6_vs_ours
    python -m superpoint_training.synthetic_hpatches data/synthetic_hpatches --sequences 10
    python -m superpoint_training.evaluate --dataset data/synthetic_hpatches --output results/synthetic
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import baselines
from .extractor import Extractor
from .hpatches import RESIZE_MODES, SPLITS, HPatches, HPatchesError, Pair
from .metrics import CORRECTNESS_THRESHOLDS, descriptor_metrics, precision_recall, repeatability
from .weights import WeightsError, load_superpoint

log = logging.getLogger(__name__)

ALL_METHODS = ("superpoint", "sift", "orb", "fast", "harris", "shi")
KIND_COLUMNS = ("illumination", "viewpoint", "all")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Protocol:
    """One of the reference's evaluation settings."""

    name: str
    size: tuple[int, int]
    nms_radius: int
    top_k: int
    export_max: int  # points kept per image in the cache (best scores first)
    distance: float = 3.0
    short_side: int | None = None  # for --resize short_side: the side length used (default: size[0])


PROTOCOLS = {
    "detector": Protocol("detector", (240, 320), nms_radius=4, top_k=300, export_max=3000),
    "descriptor": Protocol("descriptor", (480, 640), nms_radius=8, top_k=1000, export_max=5000),
}


@dataclass
class Method:
    """A method as evaluated: its report label, what it is and the settings that key its cache."""

    label: str
    family: str  # "superpoint" or a name of baselines.METHODS
    settings: dict
    extractor: Extractor | None = field(default=None, repr=False)

    @property
    def has_descriptors(self) -> bool:
        if self.family == "superpoint":
            return self.extractor is not None and self.extractor.descriptor_dim > 0  # MagicPoint: none
        return self.family in baselines.DESCRIPTORS

    @property
    def norm(self) -> str:
        return "unit" if self.family == "superpoint" else baselines.NORMS[self.family]

    def supports(self, protocol: Protocol) -> bool:
        return protocol.name == "detector" or self.has_descriptors

    def skip_reason(self, protocol: Protocol) -> str:
        """Why this method is left out of ``protocol`` (only called when it does not support it)."""
        if self.family == "superpoint":
            return (f"{self.label}: {self.settings['weights']} have no descriptor head (detector only), "
                    f"so the {protocol.name} protocol is skipped")
        return f"{self.label}: a detector without descriptors, not in the {protocol.name} protocol"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the weights' values, so that retrained weights at the same path miss the cache."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def settings_hash(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def build_methods(names: list[str], weights: list[str], device: str, detection_threshold: float | None) -> list[Method]:
    """Methods in the order given; ``superpoint`` expands to one method per weights."""
    methods = []
    for name in names:
        if name not in ALL_METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")
        if name != "superpoint":
            methods.append(Method(name, name, {"method": name, "opencv": _opencv_version()}))
            continue
        for weight in weights:
            loaded = load_superpoint(weight)
            extractor = Extractor(loaded, device=device, detection_threshold=detection_threshold, warmup=False)
            label = "superpoint" if len(weights) == 1 else f"superpoint[{Path(str(weight)).stem}]"
            settings = {
                "method": "superpoint",
                "weights": loaded.description,
                "fingerprint": weights_fingerprint(loaded.model),
                "detection_threshold": extractor.config.detection_threshold,
                "remove_borders": extractor.config.remove_borders,
                "descriptor_sampling": extractor.config.descriptor_sampling,
            }
            methods.append(Method(label, "superpoint", settings, extractor))
    return methods


def _opencv_version() -> str:
    import cv2

    return cv2.__version__


class Cache:
    """Per-image predictions of one method under one protocol and dataset resizing."""

    def __init__(self, root: Path, protocol: Protocol, method: Method, dataset: HPatches):
        self.settings = {
            "version": CACHE_VERSION,
            **method.settings,
            "protocol": asdict(protocol),
            "resize": dataset.resize,
            "short_side": dataset.short_side if dataset.resize == "short_side" else None,
        }
        self.folder = Path(root) / protocol.name / f"{method.label}-{settings_hash(self.settings)}"
        self.dataset = dataset

    def path(self, sequence: str, index: int) -> Path:
        return self.folder / sequence / f"{index}.npz"

    def stamp(self, sequence: str, index: int) -> str:
        """The source image's identity: a regenerated dataset at the same path misses the cache."""
        source = self.dataset.path(sequence, index)
        stat = source.stat()
        return f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def valid(self, sequence: str, index: int) -> bool:
        path = self.path(sequence, index)
        if not path.exists():
            return False
        try:
            with np.load(path) as data:
                return str(data["stamp"]) == self.stamp(sequence, index)
        except (OSError, ValueError, KeyError):
            return False

    def save(self, sequence: str, index: int, keypoints, scores, descriptors, image_size) -> None:
        path = self.path(sequence, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "keypoints": np.asarray(keypoints, np.float32),
            "scores": np.asarray(scores, np.float32),
            "image_size": np.asarray(image_size, np.int64),
            "stamp": np.asarray(self.stamp(sequence, index)),
        }
        if descriptors is not None:
            descriptors = np.asarray(descriptors)
            # float16 halves the cache (glue-factory's default too); ORB's packed bits stay uint8
            arrays["descriptors"] = descriptors.astype(np.float16) if descriptors.dtype.kind == "f" else descriptors
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load(self, sequence: str, index: int) -> dict[str, np.ndarray]:
        with np.load(self.path(sequence, index)) as data:
            return {key: data[key] for key in data.files}

    def write_settings(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(self.settings, indent=2, default=str))


def prefetch(pool: ThreadPoolExecutor, fn, items: list, depth: int):
    """``fn`` over ``items`` on the pool's threads, results in order, at most ``depth`` in flight."""
    pending = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def export(
    dataset: HPatches,
    method: Method,
    protocol: Protocol,
    cache: Cache,
    batch_size: int = 8,
    workers: int = 2,
    recompute: bool = False,
) -> int:
    """Predictions of every image the pairs use, into ``cache``; returns how many were computed."""
    cache.write_settings()
    todo = [item for item in dataset.images() if recompute or not cache.valid(*item)]
    if not todo:
        return 0
    keep_descriptors = protocol.name == "descriptor"
    bar = tqdm(total=len(todo), desc=f"export {method.label} @ {protocol.name}", unit="img", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if method.family == "superpoint":
            extractor = method.extractor
            extractor.configure(
                nms_radius=protocol.nms_radius, max_keypoints=protocol.export_max, fixed_keypoints=False
            )
            images = prefetch(pool, lambda item: dataset.load(*item).image, todo, 2 * batch_size)
            for start in range(0, len(todo), batch_size):
                items = todo[start : start + batch_size]
                batch = [next(images) for _ in items]
                for item, image, features in zip(items, batch, extractor(batch), strict=True):
                    f = features.numpy()
                    cache.save(*item, f.keypoints, f.scores, f.descriptors if keep_descriptors else None, image.shape)
                bar.update(len(items))
        else:

            def extract_one(item):
                image = dataset.load(*item).image
                f = baselines.extract(image, method.family, protocol.nms_radius, protocol.export_max)
                return item, f, image.shape

            for item, f, shape in prefetch(pool, extract_one, todo, 4 * max(1, workers)):
                cache.save(*item, f.keypoints, f.scores, f.descriptors if keep_descriptors else None, shape)
                bar.update(1)
    bar.close()
    return len(todo)


def pair_metrics(
    dataset: HPatches,
    method: Method,
    protocol: Protocol,
    cache: Cache,
    workers: int = 2,
    keep_matches: frozenset[tuple[str, int]] = frozenset(),
):
    """Per-pair records, for descriptors the pooled (distance, correct) of all matches, and the
    matches of the pairs in ``keep_matches`` (for pictures). Pairs run on ``workers`` threads."""
    device = method.extractor.device if method.extractor is not None else "cpu"
    load = functools.lru_cache(maxsize=4 * max(1, workers))(cache.load)  # image 1 serves five pairs

    def one(pair: Pair):
        p0, p1 = load(pair.sequence, 1), load(pair.sequence, pair.index)
        H = dataset.homography(pair)
        size0, size1 = tuple(p0["image_size"]), tuple(p1["image_size"])
        if protocol.name == "detector":
            result = repeatability(
                p0["keypoints"], p0["scores"], p1["keypoints"], p1["scores"], H, size0, size1,
                k=protocol.top_k, threshold=protocol.distance,
            )  # fmt: skip
        else:
            result = descriptor_metrics(
                p0["keypoints"], p0["scores"], p0["descriptors"], p1["keypoints"], p1["scores"], p1["descriptors"],
                H, size0, size1, norm=method.norm, k=protocol.top_k, match_threshold=protocol.distance,
                device=device,
            )  # fmt: skip
            result["keypoints0"], result["keypoints1"] = p0["keypoints"], p1["keypoints"]
        return pair, result

    records, pooled, matches = [], {"illumination": [], "viewpoint": []}, {}
    bar = tqdm(total=len(dataset.pairs), desc=f"metrics {method.label} @ {protocol.name}", unit="pair", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for pair, result in prefetch(pool, one, dataset.pairs, 2 * max(1, workers)):
            record = {"sequence": pair.sequence, "pair": pair.name, "kind": pair.kind, "method": method.label}
            record.update({k: _number(v) for k, v in result.items() if np.isscalar(v)})
            records.append(record)
            if protocol.name == "descriptor":
                pooled[pair.kind].append((result["distances"], result["correct"]))
                if (pair.sequence, pair.index) in keep_matches:
                    keys = ("keypoints0", "keypoints1", "matches", "correct")
                    matches[(pair.sequence, pair.index)] = {k: result[k] for k in keys}
            bar.update(1)
    bar.close()
    return records, pooled, matches


def _number(value) -> float | None:
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


def _fmt(value: float | None, digits: int = 3) -> str:
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
            cells = [_fmt(values[f"correct_e{e}"]["all"]) for e in CORRECTNESS_THRESHOLDS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
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


def _size_text(settings: dict, protocol: dict) -> str:
    if settings["resize"] == "reference":
        return f"images at {protocol['size'][0]}x{protocol['size'][1]}"
    if settings["resize"] == "short_side":
        return f"short side {protocol['short_side']} px"
    return "images at their own size"


def _kind_table(aggregates: dict, metric: str, digits: int) -> list[str]:
    lines = ["| | illumination | viewpoint | all |", "|---|---|---|---|"]
    for method, values in aggregates.items():
        lines.append(f"| {method} | " + " | ".join(_fmt(values[metric][k], digits) for k in KIND_COLUMNS) + " |")
    return lines + [""]


def describe_choices(args: argparse.Namespace, protocols: list[Protocol], dataset_resize: str) -> list[str]:
    """Every choice that shapes the numbers, written into the report."""
    choices = []
    for p in protocols:
        size = {
            "reference": f"images resized keeping the aspect ratio to cover {p.size[0]}x{p.size[1]} (bilinear), then "
            "centre-cropped to it; H adjusted with each image's own scale and crop offset (the reference "
            "scaled H by image 1's factor and ignored the crop)",
            "short_side": f"short side resized to {p.short_side} px (area interpolation), no crop, H adjusted",
            "none": "images at their own size, no resizing",
        }[dataset_resize]
        choices.append(f"{p.name} protocol: {size}")
        choices.append(
            f"{p.name} protocol: max-pool NMS with radius {p.nms_radius} for SuperPoint, FAST, Harris and Shi-Tomasi; "
            f"the reference used a box NMS of that size; top {p.top_k} points in the shared view; at most "
            f"{p.export_max} points per image kept in the cache"
        )
    choices += [
        "shared view: points of image 1 that H maps inside image k, points of image k that H^-1 maps inside image 1",
        "repeatability: (count1 + count2) / (N1 + N2), a point counts when its nearest warped neighbour lies "
        "within 3 px (rpautrat's compute_repeatability); localisation error: mean of those distances (px)",
        "homography: cross-checked brute-force matching (L2 for SuperPoint and SIFT, Hamming for ORB), "
        "cv2.findHomography RANSAC (reprojection threshold 3 px), mean error of the four warped corners of "
        "image 1 <= e; fewer than 4 matches or no estimate counts as incorrect",
        "matching score: cross-checked matches within 3 px of the true reprojection over the mean number of "
        "points of the two images in the shared view",
        "NN mAP: average precision of the cross-checked nearest-neighbour matches ranked by descriptor distance, "
        "a match correct within 3 px; mean over pairs. The precision-recall plot pools all matches of a kind",
        "SuperPoint: detection threshold and border from the weights' defaults (see the method lines above), "
        "descriptors stored as float16 in the cache",
        f"classical: Harris cornerHarris(4, 3, 0.04); Shi-Tomasi goodFeaturesToTrack(600, 1e-4, 5) scored by "
        f"min-eigenvalue quality; FAST threshold 10; SIFT and ORB nfeatures 1500 with their own keypoints "
        f"(no extra NMS); OpenCV {_opencv_version()}",
        "images read in gray (cv2.IMREAD_GRAYSCALE)",
    ]
    return choices


def plot_bars(report: dict, folder: Path) -> list[Path]:
    """One grouped bar chart per metric: methods on the x axis, illumination / viewpoint / all bars."""
    from .viz import import_pyplot

    plt = import_pyplot()
    paths = []
    colours = {"illumination": "#e0a030", "viewpoint": "#3070c0", "all": "#808080"}
    for protocol, per_method in report["aggregates"].items():
        for metric in PROTOCOL_METRICS[protocol]:
            methods = list(per_method)
            fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(methods), 3.6), dpi=110)
            width = 0.26
            for i, kind in enumerate(KIND_COLUMNS):
                values = [per_method[m][metric][kind] for m in methods]
                x = np.arange(len(methods)) + (i - 1) * width
                bars = ax.bar(x, [0 if v is None else v for v in values], width, label=kind, color=colours[kind])
                for bar, value in zip(bars, values, strict=True):
                    ax.annotate(_fmt(value, 2), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")  # fmt: skip
            ax.set_xticks(np.arange(len(methods)), methods, rotation=20 if len(methods) > 4 else 0)
            title = METRIC_TITLES[metric]
            ax.set_title(f"{title[0].upper()}{title[1:]} ({protocol} protocol)", fontsize=10)
            if metric != "localization_error":
                ax.set_ylim(0, 1.08)
            else:
                ax.set_ylim(0, max([v or 0 for m in methods for v in per_method[m][metric].values()] + [1]) * 1.15)
            ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            path = folder / f"{protocol}_{metric}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
    return paths


def plot_precision_recall(curves: dict, folder: Path) -> Path | None:
    """Precision-recall of the pooled nearest-neighbour matches, one panel per kind."""
    if not curves:
        return None
    from .viz import import_pyplot

    plt = import_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=110, sharey=True)
    for ax, kind in zip(axes, KIND_COLUMNS, strict=True):
        for method, per_kind in curves.items():
            curve = per_kind[kind]
            if curve["recall"]:
                ax.plot(curve["recall"], curve["precision"], label=method, lw=1.5)
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("recall (correct matches found / all correct matches)", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Nearest-neighbour matches ranked by descriptor distance (descriptor protocol)", fontsize=10)
    fig.tight_layout()
    path = folder / "precision_recall.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_matches(dataset: HPatches, pairs: list[Pair], matches: dict, folder: Path) -> list[Path]:
    """For each chosen pair, one picture with a row per method: green correct, red wrong matches."""
    import cv2

    from .viz import draw_matches

    paths = []
    for pair in pairs:
        image0, image1 = dataset.load(pair.sequence, 1).image, dataset.load(pair.sequence, pair.index).image
        rows = []
        for method, per_pair in matches.items():
            m = per_pair.get((pair.sequence, pair.index))
            if m is None:
                continue
            title = f"{method} {pair.sequence} {pair.name}: {int(m['correct'].sum())}/{len(m['matches'])} correct"
            legend = ("correct: within 3 px of the true reprojection", "wrong")
            rows.append(draw_matches(image0, image1, m["keypoints0"], m["keypoints1"], m["matches"], m["correct"],
                                     title, legend=legend))
        if rows:
            width = max(r.shape[1] for r in rows)
            rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
            path = folder / f"matches_{pair.sequence}_{pair.name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
            paths.append(path)
    return paths


def pick_match_pairs(dataset: HPatches, count: int) -> list[Pair]:
    """The hardest pair (1-last) of the first sequences, alternating illumination and viewpoint."""
    by_kind = defaultdict(list)
    for sequence in dataset.sequences.values():
        by_kind[sequence.kind].append(Pair(sequence.name, sequence.kind, sequence.targets[-1]))
    chosen = []
    for i in range(count):
        for kind in ("viewpoint", "illumination"):
            if len(chosen) < count and i < len(by_kind[kind]):
                chosen.append(by_kind[kind][i])
    return chosen


def machine_description(device: str) -> str:
    text = f"{platform.node() or 'unknown host'}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads"
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name()}"
    return text


def run(args: argparse.Namespace) -> dict:
    """The whole evaluation; returns the report dict (also written to OUTPUT/report.json)."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    output = Path(args.output)
    cache_root = Path(args.cache) if args.cache else output / "cache"
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    protocols = [PROTOCOLS[p] for p in (("detector", "descriptor") if args.protocol == "both" else (args.protocol,))]
    protocols = [dataclasses.replace(p, short_side=args.short_side or p.size[0]) for p in protocols]
    methods = build_methods(names, args.weights or ["default"], args.device, args.detection_threshold)
    timings: dict[str, float] = {}
    records: list[dict] = []
    aggregates: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    all_matches: dict[str, dict] = {}
    datasets = {}
    skipped_methods: list[str] = []
    for protocol in protocols:
        dataset = HPatches(
            args.dataset, resize=args.resize, size=protocol.size, short_side=protocol.short_side,
            split=args.split, max_sequences=args.max_sequences,
        )  # fmt: skip
        datasets[protocol.name] = dataset
        if not dataset.pairs:
            raise HPatchesError(f"{args.dataset}: no usable pairs ({len(dataset.skipped)} sequences skipped)")
        pictured = pick_match_pairs(dataset, args.match_pictures) if protocol.name == "descriptor" else []
        for method in methods:
            if not method.supports(protocol):
                reason = method.skip_reason(protocol)
                skipped_methods.append(reason)
                if method.family == "superpoint":
                    log.warning(reason)
                continue
            cache = Cache(cache_root, protocol, method, dataset)
            start = time.perf_counter()
            batch_size = args.batch_size or (16 if method.extractor and method.extractor.device.type == "cuda" else 1)
            computed = export(dataset, method, protocol, cache, batch_size, args.workers, args.recompute)
            timings[f"export {method.label} @ {protocol.name} ({computed} images computed)"] = (
                time.perf_counter() - start
            )
            start = time.perf_counter()
            method_records, pooled, matches = pair_metrics(
                dataset, method, protocol, cache, args.workers, frozenset((p.sequence, p.index) for p in pictured)
            )
            timings[f"metrics {method.label} @ {protocol.name}"] = time.perf_counter() - start
            for record in method_records:
                record["protocol"] = protocol.name
            records += method_records
            aggregates.setdefault(protocol.name, {})[method.label] = aggregate(
                method_records, PROTOCOL_METRICS[protocol.name]
            )
            if protocol.name == "descriptor":
                both = pooled["illumination"] + pooled["viewpoint"]
                curves[method.label] = {
                    "illumination": pooled_curve(pooled["illumination"]),
                    "viewpoint": pooled_curve(pooled["viewpoint"]),
                    "all": pooled_curve(both),
                }
                all_matches[method.label] = matches
    any_dataset = next(iter(datasets.values()))
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_description(args.device),
        "command": "python -m superpoint_training.evaluate " + " ".join(shlex.quote(a) for a in args.argv),
        "settings": {
            "dataset": str(Path(args.dataset).resolve()),
            "dataset_description": any_dataset.describe(),
            "resize": args.resize,
            "split": args.split,
            "device": str(next((m.extractor.device for m in methods if m.extractor), "none")),
            "protocols": {p.name: asdict(p) for p in protocols},
            "methods": {m.label: m.settings for m in methods},
            "weights": {m.label: m.settings["weights"] for m in methods if m.family == "superpoint"},
            "cache": str(cache_root),
        },
        "choices": describe_choices(args, protocols, args.resize),
        "skipped": any_dataset.skipped,
        "skipped_methods": skipped_methods,
        "aggregates": aggregates,
        "precision_recall": curves,
        "timings": timings,
        "plots": [],
        "pairs": records,
    }
    write_report(report, output)  # the numbers first: a failure in the plots cannot lose them
    if not args.no_plots:
        start = time.perf_counter()
        plots = make_plots(report, curves, datasets, all_matches, args.match_pictures, output / "plots")
        if plots:
            report["plots"] = [str(p.relative_to(output)) for p in plots]
            timings["plots"] = time.perf_counter() - start
            write_report(report, output)
    return report


def write_report(report: dict, output: Path) -> None:
    """OUTPUT/report.json and OUTPUT/report.md."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=1))
    (output / "report.md").write_text(markdown_report(report))


def make_plots(report: dict, curves: dict, datasets: dict, all_matches: dict, match_pictures: int,
               folder: Path) -> list[Path]:
    """The bar charts and precision-recall curves (matplotlib) and the match pictures (OpenCV).
    Without matplotlib the charts are skipped with one line; the match pictures are still drawn."""
    from .viz import import_pyplot

    folder.mkdir(parents=True, exist_ok=True)
    plots = []
    if import_pyplot("the evaluation's bar charts and precision-recall curves") is not None:
        plots += plot_bars(report, folder)
        pr = plot_precision_recall(curves, folder)
        plots += [pr] if pr else []
    if "descriptor" in datasets and match_pictures > 0:
        pairs = pick_match_pairs(datasets["descriptor"], match_pictures)
        plots += plot_matches(datasets["descriptor"], pairs, all_matches, folder)
    if not plots and not any(folder.iterdir()):
        folder.rmdir()  # nothing drawn: no empty folder left behind
    return plots


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m superpoint_training.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("Examples::")[1],
    )
    parser.add_argument("--dataset", required=True, help="HPatches release folder (i_*/v_* sequences)")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma list from {','.join(ALL_METHODS)}")
    parser.add_argument("--protocol", choices=("detector", "descriptor", "both"), default="both")
    parser.add_argument(
        "--weights", action="append",
        help="SuperPoint weights (name or file); repeat to compare several (default: 'default')",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="folder for report.md, report.json, plots/ and cache/")
    parser.add_argument("--cache", help="prediction cache folder (default OUTPUT/cache)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="reference",
                        help="reference: resize + centre crop to the protocol's size (default); "
                        "short_side: short side to --short-side; none: as they are")  # fmt: skip
    parser.add_argument(
        "--short-side", type=int,
        help="side for --resize short_side (default: the protocol's height, 240 / 480 as glue-factory)",
    )  # fmt: skip
    parser.add_argument("--split", choices=SPLITS, default="all")
    parser.add_argument("--max-sequences", type=int, help="only the first N sequences (quick checks)")
    parser.add_argument("--device", default="auto", help="SuperPoint device: auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch-size", type=int, help="images per SuperPoint call (default 16 on CUDA, 1 on CPU)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads for reading and OpenCV")
    parser.add_argument(
        "--threads", type=int,
        help="torch CPU threads (default: torch's); 1 is fastest on a CPU shared with other jobs",
    )  # fmt: skip
    parser.add_argument("--detection-threshold", type=float, help="SuperPoint threshold (default: the weights')")
    parser.add_argument("--recompute", action="store_true", help="ignore cached predictions")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--match-pictures", type=int, default=2, help="pairs drawn with their matches (2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    unknown = [m for m in args.methods.split(",") if m.strip() and m.strip() not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {','.join(ALL_METHODS)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        report = run(args)
    except (HPatchesError, WeightsError) as error:
        parser.error(str(error))
    print(f"wrote {Path(args.output) / 'report.md'} in {time.perf_counter() - start:.1f} s")
    for protocol, per_method in report["aggregates"].items():
        metric = "repeatability" if protocol == "detector" else "correct_e3"
        for method, values in per_method.items():
            v = values[metric]
            print(f"  {protocol:10s} {method:24s} {metric}: illumination {_fmt(v['illumination'])}, "
                  f"viewpoint {_fmt(v['viewpoint'])}, all {_fmt(v['all'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
