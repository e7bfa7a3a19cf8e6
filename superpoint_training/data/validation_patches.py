"""Validation patches: warped pairs of validation images with their homographies, written once.

After the reference's ``generate_coco_patches.py``: each validation image is preprocessed as in
training (gray, ratio-preserving resize to 240x320), warped by a random homography with the settings
of ``coco_patches_generation.yaml`` (scaling 0.1, perspective 0.05, patch ratio 0.8, rotation up to
3.14 without artifacts) and the warp is downscaled by ``warped_scale`` (0.5 there). The pairs are
written in the HPatches layout (``v_<index>_<name>/1.png``, ``2.png``, ``H_1_2``: H maps pixels of
image 1 to image 2, scale included), so that :mod:`.hpatches` and the evaluation
read them too. A ``COMPLETE`` file marks a finished set; an interrupted run starts over.

SuperPoint training (``data.validation_patches``) measures repeatability and matching on them at
every validation.
(``python -m superpoint_training.write_validation_patches`` writes a set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .geometry import warp_image
from .homographies import SAMPLER_DEFAULTS, sample_homography
from .hpatches import read_homography
from .images import read_gray, resize_crop

# coco_patches_generation.yaml (allow_artifacts and translation_overflow at the sampler's defaults).
PATCH_HOMOGRAPHIES: dict[str, Any] = {
    **SAMPLER_DEFAULTS,
    "scaling_amplitude": 0.1,
    "perspective_amplitude_x": 0.05,
    "perspective_amplitude_y": 0.05,
    "patch_ratio": 0.8,
    "max_angle": 3.14,
}
COMPLETE = "COMPLETE"


def scale_transform(sx: float, sy: float) -> np.ndarray:
    """Pixel-centre scaling x' = sx (x + 0.5) - 0.5, y' = sy (y + 0.5) - 0.5 as a 3x3 matrix."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def generate_patches(
    images: list[Path],
    output: str | os.PathLike,
    resize: tuple[int, int] | list[int] = (240, 320),
    warped_scale: float = 0.5,
    homographies: dict | None = None,
    seed: int = 0,
) -> Path:
    """Write one pair per readable image of ``images`` under ``output`` (skipped when complete)."""
    output = Path(output)
    if (output / COMPLETE).is_file():
        return output
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    params = {**PATCH_HOMOGRAPHIES, **(homographies or {})}
    written = 0
    for index, path in enumerate(images):
        gray = read_gray(path)
        if gray is None:
            continue
        image = resize_crop(gray, resize)
        h, w = image.shape
        H = sample_homography(1, (h, w), params, generator)[0].double().numpy()
        warped = warp_image(image, H)
        size = (max(8, round(h * warped_scale)), max(8, round(w * warped_scale)))
        if size != (h, w):
            warped = cv2.resize(warped, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            H = scale_transform(size[1] / w, size[0] / h) @ H
        folder = tmp / f"v_{index:05d}_{path.stem}"
        folder.mkdir()
        cv2.imwrite(str(folder / "1.png"), image)
        cv2.imwrite(str(folder / "2.png"), warped)
        np.savetxt(folder / "H_1_2", H / H[2, 2], fmt="%.10g")
        written += 1
    if not written:
        raise ValueError("no readable image to make validation patches from")
    (tmp / COMPLETE).write_text(f"{written} pairs\n", encoding="utf-8")
    shutil.rmtree(output, ignore_errors=True)
    os.replace(tmp, output)
    return output


def load_patches(folder: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, image 1 uint8, image 2 uint8, H_1_2) for every pair of a generated set."""
    folder = Path(folder)
    if not (folder / COMPLETE).is_file():
        raise FileNotFoundError(f"{folder}: not a complete validation-patch set (no {COMPLETE} file)")
    pairs = []
    for pair in sorted(p for p in folder.iterdir() if p.is_dir()):
        image1 = cv2.imread(str(pair / "1.png"), cv2.IMREAD_GRAYSCALE)
        image2 = cv2.imread(str(pair / "2.png"), cv2.IMREAD_GRAYSCALE)
        if image1 is None or image2 is None:
            raise ValueError(f"{pair}: cannot read 1.png / 2.png")
        pairs.append((pair.name, image1, image2, read_homography(pair / "H_1_2")))
    return pairs
