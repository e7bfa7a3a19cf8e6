"""HPatches sequences in the standard release layout, with the resizing choices of the evaluations.

Layout (``hpatches-sequences-release``)::

    ROOT/i_ajuntament/1.ppm .. 6.ppm, H_1_2 .. H_1_6     illumination changes (H = identity)
    ROOT/v_abstract/...                                  viewpoint changes

``H_1_k`` (3x3 text) maps pixels of image 1 to image k. A sequence gives the pairs (1, k) for every
k whose image and homography both exist, so sequences with fewer than six images (or any folder of
image pairs with known homographies named this way) work too. A folder whose numbering has an
image without its homography or the other way round is reported by name and skipped; a homography
that cannot be read or is not invertible is an error naming the file.

Resizing (``resize``):

- ``"reference"``: rpautrat's ``ratio_preserving_resize``: scale by max(target / size) so that the
  image covers the target size, truncate the new size to integers, bilinear resize, centre crop.
  The homography is adjusted with each image's own scale and crop offset (the reference scaled it
  by image 1's factor only and ignored the crop).
- ``"short_side"``: the short side to ``short_side`` pixels (glue-factory's choice, 480), area
  interpolation, no crop.
- ``"none"``: the images as they are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .geometry import random_homography, warp_image
from .images import IMAGE_SUFFIXES as IMAGE_EXTENSIONS
from .images import cover_size, read_gray, resize_crop, skimage_photos, to_rgb

log = logging.getLogger(__name__)

RESIZE_MODES = ("reference", "short_side", "none")

KINDS = {"i": "illumination", "v": "viewpoint"}
SPLITS = ("all", "illumination", "viewpoint")


class HPatchesError(ValueError):
    """A dataset folder or file that cannot be used (names the file)."""


@dataclass
class Sequence:
    """One sequence folder: image paths by index (1 is the reference) and H_1_k by k."""

    name: str
    folder: Path
    images: dict[int, Path]
    homographies: dict[int, np.ndarray]

    @property
    def kind(self) -> str:
        return KINDS[self.name[0]]

    @property
    def targets(self) -> list[int]:
        return sorted(self.homographies)


@dataclass(frozen=True)
class Pair:
    """The pair (1, k) of a sequence."""

    sequence: str
    kind: str
    index: int

    @property
    def name(self) -> str:
        return f"1-{self.index}"


@dataclass
class LoadedImage:
    """A gray uint8 image after resizing, and the 3x3 affine map from original to resized pixels."""

    image: np.ndarray
    transform: np.ndarray
    original_size: tuple[int, int]


def read_homography(path: Path) -> np.ndarray:
    """Read a 3x3 text homography; unreadable or non-invertible is an :class:`HPatchesError`."""
    try:
        H = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as error:
        raise HPatchesError(f"{path}: cannot read the homography ({error})") from error
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise HPatchesError(f"{path}: expected a finite 3x3 matrix, got shape {H.shape}")
    if abs(np.linalg.det(H)) < 1e-12 or np.linalg.cond(H) > 1e12:
        raise HPatchesError(f"{path}: the homography is not invertible (det {np.linalg.det(H):.3g})")
    return H


def _index_files(folder: Path) -> tuple[dict[int, Path], dict[int, Path]]:
    images: dict[int, Path] = {}
    homographies: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.stem.isdigit():
            images.setdefault(int(path.stem), path)
        match = re.fullmatch(r"H_1_(\d+)", path.name)
        if match:
            homographies[int(match.group(1))] = path
    return images, homographies


def scan_sequence(folder: Path) -> tuple[Sequence | None, str | None]:
    """A :class:`Sequence`, or None and the reason (naming the missing files) to skip it."""
    images, h_files = _index_files(folder)
    if 1 not in images:
        return None, f"{folder.name}: missing the reference image 1.ppm"
    indices = (set(images) | set(h_files)) - {1}
    missing = [f"{k}.ppm" for k in sorted(indices) if k not in images]
    missing += [f"H_1_{k}" for k in sorted(indices) if k not in h_files]
    if missing:
        return None, f"{folder.name}: missing {', '.join(missing)}"
    if not indices:
        return None, f"{folder.name}: no image pairs (only 1.ppm)"
    homographies = {k: read_homography(h_files[k]) for k in sorted(indices)}
    return Sequence(folder.name, folder, images, homographies), None


def resize_transform(
    size: tuple[int, int], mode: str, target: tuple[int, int] | None = None, short_side: int = 480
) -> tuple[tuple[int, int], tuple[int, int], np.ndarray]:
    """(resized size, crop offset (y, x), 3x3 affine original -> final pixels) for an image of (H, W).

    Pixel centres follow OpenCV's convention: x' = sx (x + 0.5) - 0.5 - crop_x.
    """
    h, w = size
    if mode == "none":
        return (h, w), (0, 0), np.eye(3)
    if mode == "reference":
        if target is None:
            raise ValueError("resize='reference' needs a target size (H, W)")
        new, offset = cover_size((h, w), target)
    elif mode == "short_side":
        scale = short_side / min(h, w)
        new = (max(1, round(h * scale)), max(1, round(w * scale)))
        offset = (0, 0)
    else:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    sy, sx = new[0] / h, new[1] / w
    transform = np.array(
        [[sx, 0.0, 0.5 * sx - 0.5 - offset[1]], [0.0, sy, 0.5 * sy - 0.5 - offset[0]], [0.0, 0.0, 1.0]]
    )
    return new, offset, transform


@dataclass
class HPatches:
    """The sequences under ``root`` with one resizing choice.

    Example::

        dataset = HPatches("data/hpatches-sequences-release", resize="reference", size=(240, 320))
        for pair in dataset.pairs:
            image0, image1 = dataset.load(pair.sequence, 1), dataset.load(pair.sequence, pair.index)
            H = dataset.homography(pair)      # maps image0.image pixels to image1.image pixels
    """

    root: Path
    resize: str = "reference"
    size: tuple[int, int] = (240, 320)
    short_side: int = 480
    split: str = "all"
    max_sequences: int | None = None
    sequences: dict[str, Sequence] = field(init=False)
    skipped: list[str] = field(init=False)
    _sizes: dict[Path, tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not self.root.is_dir():
            raise HPatchesError(f"{self.root}: no such dataset folder")
        self.sequences, self.skipped, self._sizes = {}, [], {}
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
        if not folders:
            raise HPatchesError(f"{self.root}: no i_* or v_* sequence folders (expected the HPatches release layout)")
        for folder in folders:
            if self.split != "all" and KINDS[folder.name[0]] != self.split:
                continue
            sequence, reason = scan_sequence(folder)
            if sequence is None:
                log.warning("skipping sequence %s", reason)
                self.skipped.append(reason)
                continue
            self.sequences[sequence.name] = sequence
            if self.max_sequences and len(self.sequences) >= self.max_sequences:
                break

    @property
    def pairs(self) -> list[Pair]:
        return [Pair(s.name, s.kind, k) for s in self.sequences.values() for k in s.targets]

    def images(self) -> list[tuple[str, int]]:
        """Every (sequence, index) that some pair uses, reference images first in each sequence."""
        return [(s.name, k) for s in self.sequences.values() for k in [1, *s.targets]]

    def path(self, sequence: str, index: int) -> Path:
        return self.sequences[sequence].images[index]

    def original_size(self, sequence: str, index: int) -> tuple[int, int]:
        path = self.path(sequence, index)
        if path not in self._sizes:
            try:  # Pillow reads the size from the header without decoding the image
                from PIL import Image

                with Image.open(path) as image:
                    self._sizes[path] = (image.height, image.width)
            except (ImportError, OSError, ValueError):
                self._sizes[path] = self._read(path).shape[:2]
        return self._sizes[path]

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        image = read_gray(path)
        if image is None:
            raise HPatchesError(f"{path}: cannot read the image")
        return image

    def transform(self, sequence: str, index: int) -> np.ndarray:
        return resize_transform(self.original_size(sequence, index), self.resize, self.size, self.short_side)[2]

    def load(self, sequence: str, index: int) -> LoadedImage:
        """Read image ``index`` of ``sequence`` in gray and resize it as configured."""
        path = self.path(sequence, index)
        image = self._read(path)
        self._sizes[path] = image.shape[:2]
        new, offset, transform = resize_transform(image.shape[:2], self.resize, self.size, self.short_side)
        if self.resize != "none":
            down = new[0] * new[1] < image.shape[0] * image.shape[1]
            interpolation = cv2.INTER_AREA if self.resize == "short_side" and down else cv2.INTER_LINEAR
            image = cv2.resize(image, (new[1], new[0]), interpolation=interpolation)
        if self.resize == "reference":
            image = image[offset[0] : offset[0] + self.size[0], offset[1] : offset[1] + self.size[1]]
        return LoadedImage(np.ascontiguousarray(image), transform, self._sizes[path])

    def homography(self, pair: Pair) -> np.ndarray:
        """H_1_k in the resized images' pixels: A_k H A_1^-1 (normalised so that H[2, 2] = 1)."""
        sequence = self.sequences[pair.sequence]
        H = self.transform(pair.sequence, pair.index) @ sequence.homographies[pair.index]
        H = H @ np.linalg.inv(self.transform(pair.sequence, 1))
        return H / H[2, 2]

    def describe(self) -> str:
        """One line for reports: what was loaded and how it was resized."""
        kinds = [s.kind for s in self.sequences.values()]
        resize = {
            "reference": f"aspect-preserving resize to cover {self.size[0]}x{self.size[1]} then centre crop (reference)",
            "short_side": f"short side resized to {self.short_side} px, no crop",
            "none": "no resizing",
        }[self.resize]
        return (
            f"{len(self.sequences)} sequences ({kinds.count('illumination')} illumination, "
            f"{kinds.count('viewpoint')} viewpoint), {len(self.pairs)} pairs, {len(self.skipped)} skipped; {resize}"
        )


# --------------------------------------------------------------------------------------------------
# Building HPatches-layout sequences from any photos (python -m superpoint_training.synthetic_hpatches)


def photometric_change(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """An illumination change of growing ``strength`` in (0, 1]: gamma, gain, offset, shading, noise."""
    h, w = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    gamma = float(np.exp(rng.uniform(-0.6, 0.6) * strength))
    x = x**gamma
    x = x * rng.uniform(1 - 0.5 * strength, 1 + 0.3 * strength) + rng.uniform(-0.15, 0.15) * strength
    # A smooth shading: a random linear ramp plus a soft blob, like a light moving across the scene.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.normal(size=2)
    ramp = (xx / w - 0.5) * direction[0] + (yy / h - 0.5) * direction[1]
    centre = rng.uniform(0, 1, size=2) * (w, h)
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * (0.3 * max(h, w)) ** 2))
    shade = 1.0 + strength * (0.4 * ramp + rng.uniform(-0.4, 0.4) * blob)
    x = x * shade[..., None]
    x = x + rng.normal(0, 0.01 + 0.02 * strength, size=x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_sequence(folder: Path, images: list[np.ndarray], homographies: list[np.ndarray]) -> None:
    """Write RGB images as ``1.ppm``.. and ``H_1_k`` text files (HPatches layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images, start=1):
        cv2.imwrite(str(folder / f"{k}.ppm"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    for k, H in enumerate(homographies, start=2):
        np.savetxt(folder / f"H_1_{k}", H / H[2, 2], fmt="%.10g")


def build(
    output: str | Path,
    photos: Iterable[tuple[str, np.ndarray]] | None = None,
    sequences: int | None = None,
    size: tuple[int, int] = (480, 640),
    images_per_sequence: int = 6,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Write ``sequences`` sequences (default: one per photo) under ``output``; returns their folders.

    ``size`` (H, W) of every image; ``images_per_sequence`` between 2 and 6 (HPatches has 6).
    """
    if not 2 <= images_per_sequence <= 6:
        raise ValueError(f"images_per_sequence must be in [2, 6], got {images_per_sequence}")
    photos = list(photos) if photos is not None else skimage_photos()
    if not photos:
        raise ValueError("no photos given")
    count = len(photos) if sequences is None else sequences
    rng = np.random.default_rng(seed)
    output = Path(output)
    folders = []
    for n in tqdm(range(count), desc="synthetic sequences", disable=not progress):
        name, photo = photos[n % len(photos)]
        base = resize_crop(to_rgb(photo), size)
        kind = "v" if n % 2 == 0 else "i"
        suffix = f"_{n // len(photos)}" if n >= len(photos) else ""
        images, homographies = [base], []
        for k in range(2, images_per_sequence + 1):
            if kind == "v":
                H = random_homography(size, rng)
                images.append(warp_image(base, H))
            else:
                H = np.eye(3)
                images.append(photometric_change(base, rng, strength=(k - 1) / 5))
            homographies.append(H)
        folder = output / f"{kind}_{name}{suffix}"
        write_sequence(folder, images, homographies)
        folders.append(folder)
    return folders
