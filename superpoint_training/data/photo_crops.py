"""Training and validation images cut from a folder of real photographs (``../shared/data/photos``).

A few hundred photos are too few for SuperPoint as they are; each training photo gives its whole
view plus ``crops_per_photo`` random crops (a share of the short side, the output's aspect ratio,
every other one mirrored), resized to ``size``. Validation photos give their whole view only.

Photos are held out **by group**, not one by one: consecutive video frames (a folder of numeric
names) form one group, and so do stereo or flow pairs (``aloeL``/``aloeR``, ``motorcycle_left``/
``_right``, ``basketball1``/``2``, ``leuvenA``/``B``), so that no validation scene has a near twin
in training. Groups go to validation by a stable hash of their name. Photos of scenes in the
evaluation set (``EVALUATION_SCENES``: Oxford's leuven is also in opencv's samples) are left out.

The campaign (:mod:`superpoint_training.campaign`) writes them as its first photo stage.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..common.files import atomic_write_bytes
from .images import IMAGE_SUFFIXES, read_gray, resize_crop

# Scenes of ../shared/data/oxford_hpatches (the final report) that also appear among the photos.
EVALUATION_SCENES = ("leuven",)
_PAIR_SUFFIX = re.compile(r"(?:[_-]?(?:left|right|[LRAB0-9]))$")
_NUMERIC = re.compile(r"^[0-9._]+$")


def photo_group(path: Path) -> str:
    """The group a photo belongs to: its folder for video frames, else its name without a pair suffix."""
    if _NUMERIC.match(path.stem):
        return path.parent.name
    return f"{path.parent.name}/{_PAIR_SUFFIX.sub('', path.stem)}"


def is_validation_group(group: str, fraction: float) -> bool:
    """A stable choice (CRC32 of the name), the same on every machine and Python version."""
    return (zlib.crc32(group.encode("utf-8")) % 1000) < fraction * 1000


@dataclass
class PhotoSplit:
    training: list[Path]
    validation: list[Path]
    excluded: list[Path]


def split_photos(root: Path, validation_fraction: float = 0.15) -> PhotoSplit:
    """The photos under ``root`` (recursive, sorted), split by group; see the module docstring."""
    photos = sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    split = PhotoSplit([], [], [])
    for photo in photos:
        group = photo_group(photo)
        if any(scene in group.lower() for scene in EVALUATION_SCENES):
            split.excluded.append(photo)
        elif is_validation_group(group, validation_fraction):
            split.validation.append(photo)
        else:
            split.training.append(photo)
    return split


def random_crops(gray: np.ndarray, count: int, size: tuple[int, int], rng: np.random.Generator,
                 scale_range: tuple[float, float] = (0.4, 0.85)) -> list[np.ndarray]:
    """``count`` random crops with the aspect ratio of ``size`` (H, W), resized to it; odd ones mirrored."""
    h, w = gray.shape
    th, tw = size
    crops = []
    for index in range(count):
        side = rng.uniform(*scale_range) * min(h, w * th / tw)
        ch, cw = int(side), int(side * tw / th)
        ch, cw = min(ch, h), min(cw, w)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = cv2.resize(gray[y : y + ch, x : x + cw], (tw, th), interpolation=cv2.INTER_AREA)
        crops.append(crop[:, ::-1].copy() if index % 2 else crop)
    return crops


def write_photo_crops(
    root: str | Path,
    output: str | Path,
    size: tuple[int, int] = (480, 640),
    crops_per_photo: int = 4,
    validation_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``output/training/...`` and ``output/validation/...`` gray JPEGs (quality 95); returns counts.

    Files that exist are kept (resumable); the crops of a photo depend only on ``seed`` and its path.
    """
    root, output = Path(root), Path(output)
    if not root.is_dir():
        raise FileNotFoundError(f"photo folder not found: {root}")
    split = split_photos(root, validation_fraction)
    if not split.training:
        raise ValueError(f"no photos under {root} (suffixes: {' '.join(IMAGE_SUFFIXES)})")
    counts = {"training": 0, "validation": 0, "excluded": len(split.excluded), "unreadable": 0}
    for name, photos, crops in (("training", split.training, crops_per_photo), ("validation", split.validation, 0)):
        for photo in photos:
            relative = photo.relative_to(root).with_suffix("")
            gray = read_gray(photo)
            if gray is None:
                counts["unreadable"] += 1
                continue
            rng = np.random.default_rng([seed, zlib.crc32(str(relative).encode("utf-8"))])
            views = [resize_crop(gray, size)] + random_crops(gray, crops, size, rng)
            for index, view in enumerate(views):
                target = output / name / relative.parent / f"{relative.name}_{index}.jpg"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(target, cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
                counts[name] += 1
    return counts
