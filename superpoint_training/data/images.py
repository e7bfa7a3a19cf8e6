"""Image files and pixels, once for every tool: which files are images, finding them in folders,
reading (also ahead, in threads), RGB conversion, the aspect-preserving resize of the reference,
and the photos that ship with scikit-image."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

# OpenCV reads them all.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")

# Real photos that ship with scikit-image (no download).
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "camera",
    "rocket",
    "coins",
    "brick",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle",
)


class PhotosError(ValueError):
    """No usable photos: a missing or empty folder, an unreadable file, no scikit-image."""


def read_gray(path: str | os.PathLike) -> np.ndarray | None:
    """An image file as gray uint8 (BT.601 weights, as the extractor), or None when it cannot be read."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
    if image.dtype != np.uint8:
        return None
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code) if image.shape[2] in (3, 4) else image[..., 0]
    return image


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """An image as gray HxW or RGB HxWx3 (uint8, or float32 in [0, 1] for 16-bit files); None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[..., 0]
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype != np.uint8:
        return None
    return image


def find_images(inputs: Iterable[str | Path], recursive: bool = False) -> list[tuple[str, Path]]:
    """(key, path) for every image named or found in the folders, in sorted order per folder.

    Keys are relative to the folder given, or the file name for a file given directly. Raises
    FileNotFoundError for a missing input and ValueError when two inputs give the same key.
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found.extend((p.relative_to(path).as_posix(), p) for p in files)
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    seen: dict[str, Path] = {}
    for key, path in found:
        if key in seen and seen[key].resolve() != path.resolve():
            raise ValueError(f"two inputs give the key {key!r}: {seen[key]} and {path} (pass their parent folder)")
        seen[key] = path
    return list({key: (key, path) for key, path in found}.values())  # the same file named twice: once


def prefetch_images(paths: list[tuple[str, Path]], workers: int = 2, depth: int = 8) -> Iterator[tuple[str, Path, np.ndarray | None]]:
    """Read images in background threads (OpenCV releases the GIL), at most ``depth`` ahead."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        items = iter(paths)
        for key, path in items:
            pending.append((key, path, pool.submit(read_image, path)))
            if len(pending) >= depth:
                break
        while pending:
            key, path, future = pending.popleft()
            nxt = next(items, None)
            if nxt is not None:
                pending.append((nxt[0], nxt[1], pool.submit(read_image, nxt[1])))
            yield key, path, future.result()


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 copy of a gray, RGB or RGBA image, uint8 or float in [0, 1]."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image[..., :3].copy()


def cover_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The reference's ``ratio_preserving_resize`` geometry for an image of ``size`` (H, W).

    Returns the resized (H, W), scaled by max(target / size) so that it covers ``target`` with the new
    size truncated to integers as there, and the (y, x) offset of the centred ``target`` crop.
    """
    h, w = size
    scale = max(target[0] / h, target[1] / w)
    new = (max(target[0], int(h * scale + 1e-6)), max(target[1], int(w * scale + 1e-6)))
    return new, ((new[0] - target[0]) // 2, (new[1] - target[1]) // 2)


def resize_crop(image: np.ndarray, target: tuple[int, int] | list[int] | None, interpolation: int | None = None) -> np.ndarray:
    """Resize to cover ``target`` (H, W) keeping the aspect ratio, then centre crop (:func:`cover_size`).

    ``interpolation`` defaults to area when shrinking, bilinear when enlarging; no ``target`` keeps the image.
    """
    if not target:
        return image
    (nh, nw), (y, x) = cover_size(image.shape[:2], target)
    if (nh, nw) != image.shape[:2]:
        if interpolation is None:
            interpolation = cv2.INTER_AREA if nh * nw < image.shape[0] * image.shape[1] else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interpolation)
    return np.ascontiguousarray(image[y : y + target[0], x : x + target[1]])


def skimage_photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) for the scikit-image photos listed in :data:`SKIMAGE_PHOTOS`."""
    try:
        from skimage import data
    except ImportError:
        raise PhotosError("the default photos come from scikit-image, which is not installed: "
                          "pip install scikit-image, or give --photos DIR") from None
    photos = []
    for name in SKIMAGE_PHOTOS:
        image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        photos.append((name, to_rgb(image)))
    return photos


def folder_photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(file stem, RGB uint8) for every readable image in ``folder`` (sorted by name)."""
    if not Path(folder).is_dir():
        raise PhotosError(f"photo folder not found: {folder}")
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    photos = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise PhotosError(f"{path}: cannot read the image")
        photos.append((path.stem, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    if not photos:
        raise PhotosError(f"{folder}: no images ({' '.join(IMAGE_SUFFIXES)})")
    return photos


def write_skimage_photos(folder: str | os.PathLike) -> list[Path]:
    """Write the real photos that ship with scikit-image as PNG files (a tiny real image folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rgb in skimage_photos():
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written
