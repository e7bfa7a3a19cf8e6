"""Homographic-adaptation labels for a folder of images (the reference's ``export_detections.py``):
detector probabilities aggregated over random warps on the device, then NMS, threshold and top-k; one
label file per image (:data:`..data.image_folder.LABEL_FORMAT`), resumable, written atomically."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..common.config import ConfigError, load_config
from ..common.files import atomic_path, atomic_write_text
from ..data.image_folder import IMAGE_EXTENSIONS, data_path, label_file, list_images
from ..data.images import read_gray, resize_crop
from ..model.loading import WeightsError
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
    root = Path(os.environ.get("SUPERPOINT_EXPER_DIR", "experiments"))
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


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def build_config(path: str | None, overrides: list[str]) -> dict:
    config = load_config(path, DEFAULTS, overrides)
    config["model"]["homography_adaptation"] = merge_config(
        config["model"]["homography_adaptation"], "model.homography_adaptation"
    )
    if config["model"]["batch_size"] < 1:
        raise ConfigError("model.batch_size: must be >= 1")
    return config


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
    from ..model.extractor import Extractor, equal_size_groups

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = config["device"]
    if world > 1 and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    data, model_cfg = config["data"], config["model"]
    root = data_path(data["images"])
    paths = list_images(root, data["extensions"])
    if data["truncate"]:
        paths = paths[: data["truncate"]]
    output = Path(output_root) if output_root is not None else (
        Path(os.environ.get("SUPERPOINT_EXPER_DIR", "experiments")) / "outputs" / export_name
    )
    output.mkdir(parents=True, exist_ok=True)
    shard = list(range(rank, len(paths), world))  # indices into paths
    todo = [i for i in shard if not label_file(output, root, paths[i]).is_file()]
    pending = [paths[i] for i in todo]
    remove_stale_temporaries(output, [label_file(output, root, p) for p in pending])
    done_before = len(shard) - len(pending)

    source = resolve_weights(experiment, weights)
    extractor = Extractor(source, device=device, precision=model_cfg["precision"], warmup=False)
    ha_cfg = model_cfg["homography_adaptation"]
    adaptation = HomographicAdaptation(extractor, ha_cfg, chunk_size=model_cfg["chunk_size"])
    meta = json.dumps({
        "weights": extractor.weights_description,
        "homography_adaptation": ha_cfg,
        "detection_threshold": model_cfg["detection_threshold"],
        "nms_radius": model_cfg["nms_radius"],
        "remove_borders": model_cfg["remove_borders"],
        "top_k": model_cfg["top_k"],
        "resize": data["resize"],
        "precision": model_cfg["precision"],
        "seed": config["seed"],
    })
    if rank == 0:
        print(f"homographic adaptation: {len(shard)} images in {root}" + (f" (rank 0 of {world})" if world > 1 else "")
              + f", {done_before} already exported; weights {extractor.weights_description}, {ha_cfg['num']} "
              f"homographies, device {extractor.device}; output {output}", file=sys.stderr)

    loader = torch.utils.data.DataLoader(
        ImageFiles(pending, data["resize"] or None),
        batch_size=model_cfg["batch_size"],
        num_workers=data["num_workers"],
        collate_fn=_collate,
    )
    pool = ThreadPoolExecutor(max_workers=4)
    futures = []
    unreadable: list[Path] = []
    written = 0
    progress = None
    if show_progress and rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=len(pending), desc=f"export {export_name}", unit="img", dynamic_ncols=True,
                        mininterval=0.5 if sys.stderr.isatty() else 30.0)
    start = time.perf_counter()
    try:
        for items in loader:
            good = [item for item in items if item[1] is not None]
            unreadable.extend(pending[item[0]] for item in items if item[1] is None)
            for indices in equal_size_groups([item[1] for item in good]):
                group = [good[i] for i in indices]
                # seeded by the image's place in the folder: the same labels for the same batches
                generator = torch.Generator().manual_seed(config["seed"] * 1_000_003 + todo[group[0][0]])
                batch = torch.from_numpy(np.stack([g[1] for g in group])).to(extractor.device)
                batch = batch.float().div_(255)[:, None]
                result = adaptation(batch, generator=generator)
                points = adaptation.select(result["prob"], model_cfg["detection_threshold"],
                                           model_cfg["nms_radius"], model_cfg["remove_borders"], model_cfg["top_k"])
                counts = points["valid"].sum(1).tolist()
                for row, (index, gray, original_size) in enumerate(group):
                    n = counts[row]
                    arrays = label_arrays(
                        points["keypoints"][row, :n], points["scores"][row, :n],
                        None if pred_only else result["prob"][row], None if pred_only else result["counts"][row],
                        gray.shape, original_size, meta,
                    )
                    futures.append(pool.submit(write_label, label_file(output, root, pending[index]), arrays))
                written += len(group)
            if progress is not None:
                progress.update(len(items))
            while futures and (futures[0].done() or len(futures) > 4 * model_cfg["batch_size"]):
                futures.pop(0).result()  # raises a write error here; bounds the queue
    finally:
        pool.shutdown(wait=True)
        if progress is not None:
            progress.close()
    for future in futures:
        future.result()
    elapsed = time.perf_counter() - start
    suffix = f"_rank{rank}" if world > 1 else ""
    if unreadable:
        (output / f"unreadable{suffix}.txt").write_text("".join(f"{p}\n" for p in unreadable), encoding="utf-8")
    summary = {
        "images": len(shard),
        "written": written,
        "already_exported": done_before,
        "unreadable": len(unreadable),
        "seconds": round(elapsed, 2),
        "images_per_second": round(written / elapsed, 3) if elapsed > 0 and written else None,
        "weights": extractor.weights_description,
        "device": str(extractor.device),
        "machine": _machine(extractor.device),
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
