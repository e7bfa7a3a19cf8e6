"""One HPatches evaluation: export each method's predictions into the cache, metrics per pair, the report."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..common.machine import machine_record
from ..data.hpatches import HPatches, HPatchesError, Pair
from . import baselines
from .cache import Cache
from .methods import ALL_METHODS, Method, Protocol, build_methods
from .metrics import descriptor_metrics, repeatability
from .plots import make_plots, pick_match_pairs
from .presets import PRESETS, EvaluationPreset
from .report import (
    PROTOCOL_METRICS,
    aggregate,
    describe_choices,
    finite_or_none,
    machine_description,
    pooled_curve,
    resolved_device,
    write_report,
)

log = logging.getLogger(__name__)


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
            box = method.settings.get("nms") == "box"
            extractor.configure(
                nms_radius=protocol.nms_radius, max_keypoints=protocol.export_max, fixed_keypoints=False,
                nms_box=protocol.nms_radius if box else 0, nms_iou=method.settings.get("nms_iou", 0.1),
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
                device=device, ransac_orders=protocol.ransac_orders,
            )  # fmt: skip
            result["keypoints0"], result["keypoints1"] = p0["keypoints"], p1["keypoints"]
        return pair, result

    records, pooled, matches = [], {"illumination": [], "viewpoint": []}, {}
    bar = tqdm(total=len(dataset.pairs), desc=f"metrics {method.label} @ {protocol.name}", unit="pair", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for pair, result in prefetch(pool, one, dataset.pairs, 2 * max(1, workers)):
            record = {"sequence": pair.sequence, "pair": pair.name, "kind": pair.kind, "method": method.label}
            record.update({k: finite_or_none(v) for k, v in result.items() if np.isscalar(v)})
            records.append(record)
            if protocol.name == "descriptor":
                pooled[pair.kind].append((result["distances"], result["correct"]))
                if (pair.sequence, pair.index) in keep_matches:
                    keys = ("keypoints0", "keypoints1", "matches", "correct")
                    matches[(pair.sequence, pair.index)] = {k: result[k] for k in keys}
            bar.update(1)
    bar.close()
    return records, pooled, matches


@dataclasses.dataclass
class _Collected:
    """What the methods' runs add up to: timings, per-pair records, aggregates, curves, drawn matches."""

    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    records: list[dict] = dataclasses.field(default_factory=list)
    aggregates: dict[str, dict] = dataclasses.field(default_factory=dict)
    curves: dict[str, dict] = dataclasses.field(default_factory=dict)
    matches: dict[str, dict] = dataclasses.field(default_factory=dict)
    skipped_methods: list[str] = dataclasses.field(default_factory=list)

    def add(self, dataset: HPatches, method: Method, protocol: Protocol, cache: Cache, batch_size: int, workers: int,
            recompute: bool, pictured: list) -> None:
        """Export ``method``'s predictions under ``protocol`` (cached), then its metrics per pair."""
        start = time.perf_counter()
        computed = export(dataset, method, protocol, cache, batch_size, workers, recompute)
        self.timings[f"export {method.label} @ {protocol.name} ({computed} images computed)"] = time.perf_counter() - start
        start = time.perf_counter()
        records, pooled, matches = pair_metrics(
            dataset, method, protocol, cache, workers, frozenset((p.sequence, p.index) for p in pictured)
        )
        self.timings[f"metrics {method.label} @ {protocol.name}"] = time.perf_counter() - start
        for record in records:
            record["protocol"] = protocol.name
        self.records += records
        self.aggregates.setdefault(protocol.name, {})[method.label] = aggregate(records, PROTOCOL_METRICS[protocol.name])
        if protocol.name == "descriptor":
            self.curves[method.label] = {
                "illumination": pooled_curve(pooled["illumination"]),
                "viewpoint": pooled_curve(pooled["viewpoint"]),
                "all": pooled_curve(pooled["illumination"] + pooled["viewpoint"]),
            }
            self.matches[method.label] = matches


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`run` measured: ``report`` is the content of OUTPUT/report.json."""

    report: dict
    output: Path

    @property
    def aggregates(self) -> dict:
        """protocol -> method -> metric -> {illumination, viewpoint, all}."""
        return self.report["aggregates"]


def run(
    dataset: str | Path,
    output: str | Path,
    *,
    methods: Sequence[str] = ALL_METHODS,
    protocol: str = "both",
    preset: str = "project",
    weights: Sequence[str] = ("default",),
    cache: str | Path | None = None,
    resize: str = "reference",
    short_side: int | None = None,
    split: str = "all",
    max_sequences: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    detection_threshold: float | None = None,
    ransac_orders: int = 1,
    recompute: bool = False,
    plots: bool = True,
    match_pictures: int = 2,
    command: str = "",
) -> EvaluationResult:
    """The whole evaluation of ``methods`` (SuperPoint once per ``weights``) on the HPatches release
    at ``dataset`` under ``preset``'s protocol; writes OUTPUT/report.md, report.json, plots/ and
    the prediction cache (``cache``, default OUTPUT/cache); ``workers``: threads for reading and OpenCV
    (default: one per CPU). Bad data raises
    :class:`~superpoint_training.data.hpatches.HPatchesError`, bad weights ``WeightsError``."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {','.join(ALL_METHODS)}")
    if ransac_orders < 1:
        raise ValueError(f"ransac_orders must be at least 1, got {ransac_orders}")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(
            Path(dataset), Path(output), list(methods), protocol, PRESETS[preset], list(weights) or ["default"],
            Path(cache) if cache else Path(output) / "cache", resize, short_side, split, max_sequences, device,
            batch_size, workers or os.cpu_count() or 1, detection_threshold, ransac_orders, recompute, plots,
            match_pictures, command,
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    dataset_path: Path, output: Path, names: list[str], protocol_choice: str, preset: EvaluationPreset, weights: list[str],
    cache_root: Path, resize: str, short_side: int | None, split: str, max_sequences: int | None, device: str,
    batch_size: int | None, workers: int, detection_threshold: float | None, ransac_orders: int, recompute: bool,
    plots: bool, match_pictures: int, command: str,
) -> EvaluationResult:  # fmt: skip
    chosen = ("detector", "descriptor") if protocol_choice == "both" else (protocol_choice,)
    protocols = [dataclasses.replace(preset.protocols[p], short_side=short_side or preset.protocols[p].size[0],
                                     ransac_orders=ransac_orders) for p in chosen]
    threshold = detection_threshold if detection_threshold is not None else preset.detection_threshold
    methods = build_methods(names, weights, device, threshold, preset.remove_borders,
                            preset.nms_iou if preset.box_nms else None, preset.subpixel, preset.scales)
    collected = _Collected()
    datasets = {}
    for protocol in protocols:
        dataset = HPatches(
            dataset_path, resize=resize, size=protocol.size, short_side=protocol.short_side,
            split=split, max_sequences=max_sequences,
        )  # fmt: skip
        datasets[protocol.name] = dataset
        if not dataset.pairs:
            raise HPatchesError(f"{dataset_path}: no usable pairs ({len(dataset.skipped)} sequences skipped)")
        pictured = pick_match_pairs(dataset, match_pictures) if protocol.name == "descriptor" else []
        for method in methods:
            if not method.supports(protocol):
                collected.skipped_methods.append(method.skip_reason(protocol))
                if method.family == "superpoint":
                    log.warning(collected.skipped_methods[-1])
                continue
            cache = Cache(cache_root, protocol, method, dataset)
            batch = batch_size or (16 if method.extractor and method.extractor.device.type == "cuda" else 1)
            collected.add(dataset, method, protocol, cache, batch, workers, recompute, pictured)
    any_dataset = next(iter(datasets.values()))
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_description(device),
        "machine_record": machine_record(resolved_device(device)),
        "command": command,
        "settings": {
            "preset": preset.name,
            "dataset": str(dataset_path.resolve()),
            "dataset_description": any_dataset.describe(),
            "resize": resize,
            "split": split,
            "device": str(next((m.extractor.device for m in methods if m.extractor), "none")),
            # the network path each SuperPoint method ran (backend and precision as resolved)
            "inference": {m.label: {"backend": m.extractor.backend, "precision": m.extractor.precision}
                          for m in methods if m.extractor},
            "protocols": {p.name: asdict(p) for p in protocols},
            "methods": {m.label: m.settings for m in methods},
            "weights": {m.label: m.settings["weights"] for m in methods if m.family == "superpoint"},
            "cache": str(cache_root),
        },
        "choices": describe_choices(protocols, resize, preset, detection_threshold),
        "skipped": any_dataset.skipped,
        "skipped_methods": collected.skipped_methods,
        "aggregates": collected.aggregates,
        "precision_recall": collected.curves,
        "timings": collected.timings,
        "plots": [],
        "pairs": collected.records,
    }
    write_report(report, output)  # the numbers first: a failure in the plots cannot lose them
    if plots:
        start = time.perf_counter()
        pictures = make_plots(report, collected.curves, datasets, collected.matches, match_pictures, output / "plots")
        if pictures:
            report["plots"] = [str(p.relative_to(output)) for p in pictures]
            collected.timings["plots"] = time.perf_counter() - start
            write_report(report, output)
    return EvaluationResult(report, output)
