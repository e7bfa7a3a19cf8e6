"""Homographic-adaptation labels for a folder of images (the reference's ``export_detections.py``):
detector probabilities aggregated over random warps on the device, then NMS, threshold and top-k; one
label file per image (:data:`..data.image_folder.LABEL_FORMAT`), resumable, written atomically."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..common.config import ConfigError, load_config
from ..common.experiments import experiments_root, exports_root
from ..common.files import atomic_path, atomic_write_text
from ..common.machine import machine_record
from ..data.image_folder import IMAGE_EXTENSIONS, data_path, label_file, list_images
from ..data.images import read_gray, resize_crop
from ..model.loading import WeightsError
from .distributed import TorchrunEnvironment
from .homographic_adaptation import DEFAULT_CONFIG as HA_DEFAULTS
from .homographic_adaptation import HomographicAdaptation, merge_config

log = logging.getLogger(__name__)


# magic-point_coco_export.yaml (the reference's settings); names are the Extractor's.
DEFAULTS: dict[str, Any] = {
    "data": {
        "name": "image_folder",
        "images": "COCO/train2014",
        "resize": [240, 320],
        "extensions": list(IMAGE_EXTENSIONS),
        "truncate": 0,  # only the first N images (0: all)
        "num_workers": 4,  # image decoding processes
    },
    "model": {
        "batch_size": 8,  # images per homographic-adaptation batch (each gives num warps)
        "chunk_size": 0,  # warped images per network call (0: 256 on CUDA, 8 on the CPU)
        "precision": "fp32",  # fp32, fp16, bf16 (the network; aggregation is float32)
        "backend": "torch",  # torch, onnxruntime, openvino, auto: what runs the network (inference only)
        "detection_threshold": 0.015,
        "nms_radius": 4,  # max-pool NMS (the reference: box NMS of size 4)
        "remove_borders": 0,  # the reference removes no border here
        "top_k": 0,  # 0: every point above the threshold
        "homography_adaptation": HA_DEFAULTS,
    },
    "device": "auto",
    "seed": 0,
}


class ImageFiles(torch.utils.data.Dataset):
    """Read and preprocess images in DataLoader workers; unreadable ones come back as None."""

    def __init__(self, paths: list[Path], resize):
        self.paths, self.resize = paths, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        gray = read_gray(self.paths[index])
        if gray is None:
            return index, None, None
        return index, resize_crop(gray, self.resize), gray.shape


def _collate(items):
    return items


def resolve_weights(experiment: str, weights: str | None) -> str:
    """--weights, else the experiment's weights.pth (or checkpoint.pth), else named weights when the
    experiment is one of their names (``magicpoint_shapes``: asked for by name, never a fallback);
    an unknown experiment is an error that lists the experiments there are."""
    from ..model.loading import NAMED_WEIGHTS

    if weights:
        return weights
    root = experiments_root()
    folder = root / experiment
    for name in ("weights.pth", "checkpoint.pth"):
        if (folder / name).is_file():
            return str(folder / name)
    if folder.exists():
        raise WeightsError(f"{folder} has no weights.pth or checkpoint.pth (train it first or pass --weights)")
    if experiment in NAMED_WEIGHTS:
        return experiment
    trained = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "outputs"
                     and any((p / n).is_file() for n in ("weights.pth", "checkpoint.pth"))) if root.is_dir() else []
    listing = ", ".join(trained[:20]) + (f" ... ({len(trained)} in all)" if len(trained) > 20 else "")
    raise WeightsError(
        f"no experiment {experiment!r} in {root} (experiments with weights: {listing or 'none'}); "
        f"name one of them, or named weights ({', '.join(n for n, (f, _) in NAMED_WEIGHTS.items() if f)}), "
        "or pass --weights FILE"
    )


def write_label(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed under a temporary name in the same folder, then renamed (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def remove_stale_temporaries(output: Path, targets: list[Path]) -> None:
    """Delete temporary files that an interrupted run left for the labels still to be written."""
    wanted = {(t.parent, t.name) for t in targets}
    for tmp in output.rglob(".*.tmp"):
        name = tmp.name[1:].rsplit(".", 2)[0]  # common.files.temporary_name: ".<label>.npz.<pid>.tmp" -> "<label>.npz"
        if (tmp.parent, name) in wanted:
            tmp.unlink(missing_ok=True)


def label_arrays(
    keypoints: torch.Tensor,
    scores: torch.Tensor,
    prob: torch.Tensor | None,
    counts: torch.Tensor | None,
    image_size: tuple[int, int],
    original_size: tuple[int, int],
    meta: str,
) -> dict[str, np.ndarray]:
    keypoints = keypoints.float().cpu().numpy().reshape(-1, 2)
    arrays = {
        "keypoints": keypoints,
        "scores": scores.float().cpu().numpy().reshape(-1),
        "points": np.round(keypoints[:, ::-1]).astype(np.int32),
        "image_size": np.asarray(image_size, np.int32),
        "original_size": np.asarray(original_size, np.int32),
        "meta": np.asarray(meta),
    }
    if prob is not None:
        arrays["prob"] = prob.cpu().numpy().astype(np.float16)
        arrays["counts"] = counts.clamp(max=255).round().to(torch.uint8).cpu().numpy()
    return arrays


def build_config(path: str | None, overrides: list[str]) -> dict:
    config = load_config(path, DEFAULTS, overrides)
    config["model"]["homography_adaptation"] = merge_config(
        config["model"]["homography_adaptation"], "model.homography_adaptation"
    )
    if config["model"]["batch_size"] < 1:
        raise ConfigError("model.batch_size: must be >= 1")
    from ..model.extractor import BACKEND_CHOICES

    if config["model"]["backend"] not in BACKEND_CHOICES:
        raise ConfigError(f"model.backend: must be one of {list(BACKEND_CHOICES)}, got {config['model']['backend']!r}")
    return config


@dataclass
class ExportPlan:
    """This process's share of an export: the images still to label and where their labels go."""

    root: Path  # the image folder
    output: Path  # the label folder
    shard: int  # images of this process's share, labelled or not
    pending: list[Path]  # those without a label file yet
    positions: list[int]  # their indices in the folder's sorted list (they seed the warps)

    def label(self, index: int) -> Path:
        return label_file(self.output, self.root, self.pending[index])


def plan_export(data: dict, output: Path, environment: TorchrunEnvironment) -> ExportPlan:
    """List the folder's images, take this rank's share and skip those already labelled (removing
    the temporary files an interrupted run left for them)."""
    root = data_path(data["images"])
    paths = list_images(root, data["extensions"])
    if data["truncate"]:
        paths = paths[: data["truncate"]]
    output.mkdir(parents=True, exist_ok=True)
    shard = list(range(environment.rank, len(paths), environment.world_size))  # indices into paths
    todo = [i for i in shard if not label_file(output, root, paths[i]).is_file()]
    pending = [paths[i] for i in todo]
    remove_stale_temporaries(output, [label_file(output, root, p) for p in pending])
    return ExportPlan(root, output, len(shard), pending, todo)


class BackgroundWrites:
    """Label files written by a few threads while the device labels the next batch. At most ``limit``
    writes wait; a write error is raised in the caller's thread (at a later submit or at the end)."""

    def __init__(self, limit: int, threads: int = 4):
        self.limit = limit
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.pending: deque[Future] = deque()

    def submit(self, function, *args) -> None:
        self.pending.append(self.pool.submit(function, *args))
        while self.pending and (self.pending[0].done() or len(self.pending) > self.limit):
            self.pending.popleft().result()

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.pool.shutdown(wait=True)
        if exc_type is None:
            while self.pending:
                self.pending.popleft().result()


def export_device(option: str, environment: TorchrunEnvironment) -> str:
    """Under torchrun on CUDA, ``auto`` and ``cuda`` mean the local rank's GPU."""
    if environment.enabled and torch.cuda.is_available() and option in ("auto", "cuda"):
        return f"cuda:{environment.local_rank}"
    return option


def label_meta(config: dict, weights: str, backend: str) -> str:
    """The settings every label file records (JSON)."""
    model_cfg = config["model"]
    return json.dumps({
        "weights": weights,
        "homography_adaptation": model_cfg["homography_adaptation"],
        "detection_threshold": model_cfg["detection_threshold"],
        "nms_radius": model_cfg["nms_radius"],
        "remove_borders": model_cfg["remove_borders"],
        "top_k": model_cfg["top_k"],
        "resize": config["data"]["resize"],
        "precision": model_cfg["precision"],
        "backend": backend,  # the one that ran (model.backend auto resolves to one)
        "seed": config["seed"],
    })


def export(
    config: dict,
    experiment: str,
    export_name: str,
    *,
    weights: str | None = None,
    pred_only: bool = False,
    output_root: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the export; returns the summary (counts, rate, settings). See the module docstring."""
    from ..model.extractor import Extractor

    environment = TorchrunEnvironment.from_environ()
    output = Path(output_root) if output_root is not None else exports_root() / export_name
    plan = plan_export(config["data"], output, environment)
    model_cfg = config["model"]
    extractor = Extractor(resolve_weights(experiment, weights), device=export_device(config["device"], environment),
                          precision=model_cfg["precision"], backend=model_cfg["backend"], warmup=False)
    adaptation = HomographicAdaptation(extractor, model_cfg["homography_adaptation"],
                                       chunk_size=model_cfg["chunk_size"])
    done_before = plan.shard - len(plan.pending)
    if environment.rank == 0:
        world = environment.world_size
        print(f"homographic adaptation: {plan.shard} images in {plan.root}" + (f" (rank 0 of {world})" if world > 1 else "")
              + f", {done_before} already exported; weights {extractor.weights_description}, "
              f"{model_cfg['homography_adaptation']['num']} homographies, device {extractor.device}; output {output}",
              file=sys.stderr)
    progress = None
    if show_progress and environment.rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=len(plan.pending), desc=f"export {export_name}", unit="img", dynamic_ncols=True,
                        mininterval=0.5 if sys.stderr.isatty() else 30.0)
    start = time.perf_counter()
    try:
        meta = label_meta(config, extractor.weights_description, extractor.backend)
        labeller = Labeller(adaptation, extractor.device, config, meta, pred_only)
        written, unreadable = label_images(plan, labeller, progress)
    finally:
        if progress is not None:
            progress.close()
    return write_summary(plan, environment, extractor, config, pred_only, written, unreadable,
                         time.perf_counter() - start)


def label_images(plan: ExportPlan, labeller: Labeller, progress=None) -> tuple[int, list[Path]]:
    """Label ``plan.pending`` batch by batch; returns the number written and the unreadable images."""
    from ..model.extractor import equal_size_groups

    data, batch_size = labeller.config["data"], labeller.config["model"]["batch_size"]
    loader = torch.utils.data.DataLoader(ImageFiles(plan.pending, data["resize"] or None), batch_size=batch_size,
                                         num_workers=data["num_workers"], collate_fn=_collate)
    unreadable: list[Path] = []
    written = 0
    with BackgroundWrites(limit=4 * batch_size) as writes:
        for items in loader:
            good = [item for item in items if item[1] is not None]
            unreadable.extend(plan.pending[item[0]] for item in items if item[1] is None)
            for indices in equal_size_groups([item[1] for item in good]):
                group = [good[i] for i in indices]
                for index, arrays in labeller(group, plan.positions):
                    writes.submit(write_label, plan.label(index), arrays)
                written += len(group)
            if progress is not None:
                progress.update(len(items))
    return written, unreadable


@dataclass
class Labeller:
    """Homographic adaptation, then NMS, threshold and top-k, with the settings of one export."""

    adaptation: HomographicAdaptation
    device: torch.device
    config: dict
    meta: str  # label_meta
    pred_only: bool  # keypoints only, without the aggregated probability map

    def __call__(self, group: list, positions: list[int]) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Label images of one size (``(index, image, original size)`` items, ``positions[index]``
        their place in the folder); returns each one's index and its label arrays."""
        model_cfg = self.config["model"]
        # seeded by the image's place in the folder: the same labels for the same batches
        generator = torch.Generator().manual_seed(self.config["seed"] * 1_000_003 + positions[group[0][0]])
        batch = torch.from_numpy(np.stack([g[1] for g in group])).to(self.device)
        result = self.adaptation(batch.float().div_(255)[:, None], generator=generator)
        points = self.adaptation.select(result["prob"], model_cfg["detection_threshold"], model_cfg["nms_radius"],
                                        model_cfg["remove_borders"], model_cfg["top_k"])
        counts = points["valid"].sum(1).tolist()
        labels = []
        for row, (index, gray, original_size) in enumerate(group):
            n = counts[row]
            labels.append((index, label_arrays(
                points["keypoints"][row, :n], points["scores"][row, :n],
                None if self.pred_only else result["prob"][row], None if self.pred_only else result["counts"][row],
                gray.shape, original_size, self.meta,
            )))
        return labels


def write_summary(plan: ExportPlan, environment: TorchrunEnvironment, extractor, config: dict, pred_only: bool,
                  written: int, unreadable: list[Path], elapsed: float) -> dict[str, Any]:
    """``summary[_rankN].yaml`` and ``unreadable[_rankN].txt`` in the label folder, and the closing line."""
    rank, world, output = environment.rank, environment.world_size, plan.output
    suffix = f"_rank{rank}" if world > 1 else ""
    if unreadable:
        (output / f"unreadable{suffix}.txt").write_text("".join(f"{p}\n" for p in unreadable), encoding="utf-8")
    done_before = plan.shard - len(plan.pending)
    summary = {
        "images": plan.shard,
        "written": written,
        "already_exported": done_before,
        "unreadable": len(unreadable),
        "seconds": round(elapsed, 2),
        "images_per_second": round(written / elapsed, 3) if elapsed > 0 and written else None,
        "weights": extractor.weights_description,
        "device": str(extractor.device),
        "machine": machine_record(str(extractor.device)),
        "rank": rank,
        "world_size": world,
        "config": config,
        "pred_only": pred_only,
    }
    atomic_write_text(output / f"summary{suffix}.yaml", yaml.safe_dump(summary, sort_keys=False))
    message = (f"rank {rank}: " if world > 1 else "") + (
        f"wrote {written} label files to {output} ({summary['images_per_second']} images/s), "
        f"{done_before} already exported, {len(unreadable)} unreadable images skipped"
    )
    print(message + (f" (listed in {output / f'unreadable{suffix}.txt'})" if unreadable else ""), file=sys.stderr)
    return summary
