"""A folder of images (MS-COCO's ``train2014/`` or any folder) with exported keypoint labels, as a torch Dataset.

Images are found recursively, read as gray and resized as the reference (:func:`.images.resize_crop`); a
relative ``images`` path lies under ``$SUPERPOINT_DATA_DIR``. The label of ``<images>/a/b.jpg`` is
``<labels>/a/b.npz`` (:data:`LABEL_FORMAT`). ``validation`` is the first ``validation_size`` images (or
the ``validation_images`` folder), ``training`` the rest. ``random_crop: [h, w]`` cuts each training image
to a random window of that size after the resize (labels shifted with it), so that a network can learn
at the full resolution of its labels for the cost of smaller images; validation keeps the whole image.
The photometric augmentation runs here per
sample, unless ``warped_pair.enable``: SuperPoint training then applies it on the device to both images
of each pair.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..common.config import ConfigError, merge_strict
from ..common.experiments import exports_root
from .augmentation import DEFAULT_CONFIG as PHOTOMETRIC_DEFAULTS
from .augmentation import PRESETS as PHOTOMETRIC_PRESETS
from .augmentation import PhotometricAugmentation, merge_photometric_config
from .homographies import DEFAULT_CONFIG as HOMOGRAPHIC_DEFAULTS
from .homographies import HomographicAugmentation
from .images import IMAGE_SUFFIXES as IMAGE_EXTENSIONS
from .images import read_gray, resize_crop

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data or label folder that is missing, empty or does not fit the config: the user's to fix,
    shown as one line by the commands."""


LABEL_FORMAT = """One .npz per image (numpy.load(path)):
  keypoints      (N, 2) float32  x, y pixels in the preprocessed image, (0, 0) = centre of the top-left pixel
  scores         (N,)   float32  aggregated probability at each keypoint (descending)
  points         (N, 2) int32    row, col: the reference's 'points' field, for its readers
  image_size     (2,)   int32    H, W of the preprocessed image the labels refer to
  original_size  (2,)   int32    H, W of the image file
  prob           (H, W) float16  the aggregated probability map (absent with --pred-only)
  counts         (H, W) uint8    how many warps saw each pixel (absent with --pred-only)
  meta           str            JSON: weights, homographies, aggregation, thresholds, resize
"""

# The reference's coco.py defaults and magic-point_coco_train.yaml's augmentation values.
DEFAULT_CONFIG: dict[str, Any] = {
    "name": "image_folder",
    "images": "COCO/train2014",
    "labels": "",
    "resize": [240, 320],
    "validation_size": 100,
    "validation_images": "",  # a separate folder for the validation split (then all of images train)
    "validation_labels": "",  # its labels (default: labels)
    "random_crop": [],  # [h, w]: a random window of each training image after resize ([]: the whole image)
    "truncate": 0,  # keep only the first N images (0: all)
    "extensions": list(IMAGE_EXTENSIONS),
    "validation_patches": "",  # SuperPoint: warped validation pairs (data.validation_patches)
    "augmentation": {
        "photometric": {**PHOTOMETRIC_DEFAULTS, "enable": True, "params": PHOTOMETRIC_PRESETS["magicpoint_coco"]},
        "homographic": {**HOMOGRAPHIC_DEFAULTS, "enable": False},
    },
    "warped_pair": {**HOMOGRAPHIC_DEFAULTS, "enable": False},
}
SPLIT_ALIASES = {"training": "training", "train": "training", "validation": "validation", "val": "validation",
                 "test": "validation"}


def merge_config(config: Mapping | None) -> dict[str, Any]:
    """The ``data`` section merged over :data:`DEFAULT_CONFIG`; errors name the key.

    As in the reference, an augmentation section that gives ``params`` replaces the default params
    (what it leaves out takes the functions' own defaults).
    """
    config = copy.deepcopy(dict(config or {}))
    augmentation = config.pop("augmentation", None) or {}
    warped_pair = config.pop("warped_pair", None) or {}
    base = {k: v for k, v in DEFAULT_CONFIG.items() if k not in ("augmentation", "warped_pair")}
    merged = merge_strict(base, config)
    if not isinstance(augmentation, Mapping):
        raise ConfigError(f"augmentation: expected a mapping, got {augmentation!r}")
    unknown = set(augmentation) - {"photometric", "homographic"}
    if unknown:
        raise ConfigError(f"augmentation.{sorted(unknown)[0]}: unknown key (known: homographic, photometric)")
    photometric = {**DEFAULT_CONFIG["augmentation"]["photometric"], **dict(augmentation.get("photometric") or {})}
    homographic = {**DEFAULT_CONFIG["augmentation"]["homographic"], **dict(augmentation.get("homographic") or {})}
    merged["augmentation"] = {
        "photometric": merge_photometric_config(photometric, "augmentation.photometric"),
        "homographic": HomographicAugmentation(homographic, "augmentation.homographic").config,
    }
    merged["warped_pair"] = HomographicAugmentation(
        {**DEFAULT_CONFIG["warped_pair"], **dict(warped_pair)}, "warped_pair"
    ).config
    resize, crop = (_check_size(key, merged[key]) for key in ("resize", "random_crop"))
    if crop and resize and (crop[0] > resize[0] or crop[1] > resize[1]):
        raise ConfigError(f"random_crop: {list(crop)} is larger than resize {list(resize)}")
    return merged


def _check_size(key: str, size):
    """``size`` if it is [] or [height, width] positive ints; else a ConfigError naming ``key``."""
    if size and (len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)):
        raise ConfigError(f"{key}: expected [height, width] positive ints or [], got {size!r}")
    return size


def data_path(text: str | os.PathLike) -> Path:
    """A data path: ``~`` and ``$VARS`` expanded; relative ones under ``$SUPERPOINT_DATA_DIR`` when set."""
    path = Path(os.path.expandvars(os.path.expanduser(str(text))))
    root = os.environ.get("SUPERPOINT_DATA_DIR")
    return path if path.is_absolute() or not root else Path(root) / path


def labels_path(text: str | os.PathLike) -> Path:
    """A label folder: an existing folder, or an export name under ``$SUPERPOINT_EXPER_DIR/outputs/``."""
    path = Path(os.path.expandvars(os.path.expanduser(str(text))))
    if path.is_absolute() or path.is_dir():
        return path
    return exports_root() / path


def list_images(folder: Path, extensions=IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); two files that would share a label are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = "" if folder.is_absolute() or os.environ.get("SUPERPOINT_DATA_DIR") else \
            " (relative paths are taken under $SUPERPOINT_DATA_DIR when it is set)"
        raise DataError(f"image folder not found: {folder}{hint}")
    wanted = {e.lower() for e in extensions}
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in wanted and p.is_file())
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.relative_to(folder).with_suffix("")
        if key in seen:
            raise DataError(f"{seen[key]} and {path} would share the label file {key}.npz: rename one")
        seen[key] = path
    return paths


def label_file(labels: Path, image_root: Path, image: Path) -> Path:
    """``<labels>/<image path relative to image_root, suffix .npz>``."""
    return labels / image.relative_to(image_root).with_suffix(".npz")


def load_label(path: Path) -> dict[str, np.ndarray]:
    """keypoints (N, 2) and image_size (H, W) of a label file; errors name the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "keypoints" in data:
                keypoints = data["keypoints"].astype(np.float32).reshape(-1, 2)
            elif "points" in data:  # the reference's (row, col) layout
                keypoints = data["points"][:, ::-1].astype(np.float32).reshape(-1, 2)
            else:
                raise ValueError("no 'keypoints' (or 'points') array")
            size = tuple(int(v) for v in data["image_size"]) if "image_size" in data else None
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: unreadable label file ({error})") from error
    return {"keypoints": keypoints, "image_size": size}


def label_provenance(data: Mapping) -> dict | None:
    """Where a run's labels come from: each label folder (absolute) with what its export's
    ``summary.yaml`` says (weights, homographies, images); None for data without labels."""
    folders = {key: data.get(key) for key in ("labels", "validation_labels") if data.get(key)}
    if not folders:
        return None
    record = {}
    for key, text in folders.items():
        folder = labels_path(text).resolve()
        entry: dict[str, Any] = {"folder": str(folder)}
        summaries = sorted(folder.glob("summary*.yaml")) if folder.is_dir() else []
        if summaries:
            import yaml

            try:
                summary = yaml.safe_load(summaries[0].read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                summary = {}
            adaptation = ((summary.get("config") or {}).get("model") or {}).get("homography_adaptation") or {}
            entry.update(weights=summary.get("weights"), homographies=adaptation.get("num"),
                         images=summary.get("images"))
        record[key] = entry
    return record


def keypoint_map(keypoints: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """(N, 2) xy points to an (H, W) 0/1 map (rounded; points outside are dropped)."""
    h, w = shape
    kmap = torch.zeros((h, w), dtype=torch.float32)
    if len(keypoints):
        points = np.round(keypoints).astype(np.int64)
        keep = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
        points = torch.from_numpy(points[keep])
        kmap[points[:, 1], points[:, 0]] = 1.0
    return kmap


def random_window(gray: np.ndarray, size, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` window of ``gray`` (torch's random stream, seeded per DataLoader worker) and its
    top-left corner as x, y."""
    h, w = size
    if gray.shape[0] < h or gray.shape[1] < w:
        raise DataError(f"{path}: image of size {gray.shape} is smaller than data.random_crop {list(size)}")
    y = int(torch.randint(gray.shape[0] - h + 1, ()))
    x = int(torch.randint(gray.shape[1] - w + 1, ()))
    return np.ascontiguousarray(gray[y:y + h, x:x + w]), np.array([x, y], dtype=np.float32)


class ImageFolder(Dataset):
    """Images of a folder with their exported labels; see the module docstring.

    ``labels_required`` (default: when ``labels`` is set) drops images without a label file.
    """

    merge_config = staticmethod(merge_config)  # the trainer checks the data section with it

    def __init__(self, config: Mapping | None, split: str = "training"):
        if split not in SPLIT_ALIASES:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLIT_ALIASES)})")
        self.config = merge_config(config)
        self.split = SPLIT_ALIASES[split]
        separate = bool(self.config["validation_images"]) and self.split == "validation"
        self.root = data_path(self.config["validation_images" if separate else "images"])
        paths = list_images(self.root, self.config["extensions"])
        if self.config["truncate"]:
            paths = paths[: self.config["truncate"]]
        labels = (self.config["validation_labels"] or self.config["labels"]) if separate else self.config["labels"]
        self.labels = labels_path(labels) if labels else None
        if self.labels is not None:
            if not self.labels.is_dir():
                raise DataError(f"label folder not found: {self.labels} (data.labels: {labels}; export the labels "
                                "first with export_detections, or give an existing folder)")
            labelled = [p for p in paths if label_file(self.labels, self.root, p).is_file()]
            if len(labelled) < len(paths):
                missing = next(p for p in paths if not label_file(self.labels, self.root, p).is_file())
                log.warning("%d of %d images in %s have no label in %s (skipped), e.g. %s",
                            len(paths) - len(labelled), len(paths), self.root, self.labels, missing.name)
            paths = labelled
        if not paths:
            raise DataError(f"no usable images in {self.root}" + (f" with labels in {self.labels}" if self.labels else ""))
        n_val = min(self.config["validation_size"], len(paths))
        if self.config["validation_images"]:
            if data_path(self.config["validation_images"]).resolve() == data_path(self.config["images"]).resolve():
                raise DataError(f"data.validation_images is data.images ({self.root}): training and validation "
                                "would be the same images; give a separate folder, or leave validation_images empty")
            self.paths = paths[:n_val] if separate else paths
        else:
            if self.config["validation_size"] >= len(paths):
                raise DataError(
                    f"data.validation_size {self.config['validation_size']} >= the {len(paths)} usable images in "
                    f"{self.root}: training and validation would overlap; lower data.validation_size or set "
                    "data.validation_images to a separate folder")
            self.paths = paths[:n_val] if self.split == "validation" else paths[n_val:]
        photometric = PhotometricAugmentation(self.config["augmentation"]["photometric"])
        augment = self.split == "training" and photometric.enabled and not self.config["warped_pair"]["enable"]
        self.photometric = photometric if augment else None

    def __len__(self) -> int:
        return len(self.paths)

    def label_file(self, index: int) -> Path:
        assert self.labels is not None
        return label_file(self.labels, self.root, self.paths[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        gray = read_gray(path)
        if gray is None:
            raise ValueError(f"{path}: cannot read the image")
        gray = resize_crop(gray, self.config["resize"])
        item: dict[str, Any] = {"name": str(path.relative_to(self.root).with_suffix(""))}
        if self.labels is not None:
            label = load_label(self.label_file(index))
            if label["image_size"] is not None and label["image_size"] != gray.shape:
                raise DataError(
                    f"{self.label_file(index)}: labels for an image of size {label['image_size']} but {path} "
                    f"is {gray.shape} after preprocessing (resize {self.config['resize']}): re-export the labels "
                    "with the same data.resize"
                )
            keypoints = label["keypoints"]
        if self.config["random_crop"] and self.split == "training":
            gray, offset = random_window(gray, self.config["random_crop"], path)
            if self.labels is not None:
                keypoints = keypoints - offset
        if self.labels is not None:
            item["keypoint_map"] = keypoint_map(keypoints, gray.shape)
        if self.photometric is not None:
            gray = self.photometric(gray)
        item["image"] = torch.from_numpy(gray).float().div(255)[None]
        item["valid_mask"] = torch.ones(gray.shape, dtype=torch.float32)
        return item
