"""Build HPatches-layout sequences from any photos, for a quick check without downloading HPatches.

Each photo gives one sequence: ``v_<name>`` (viewpoint) holds the photo as ``1.ppm`` and five views
warped by random homographies (:func:`superpoint_training.geometry.random_homography`);
``i_<name>`` (illumination) holds the photo and five photometric changes of it (gamma, gain and
offset, a smooth shading, noise) with identity homographies. Kinds alternate; with more sequences
than photos the photos are reused with other random draws. The numbers this set gives are not
HPatches numbers: it checks that a pipeline works and compares methods on equal terms.

Examples::

    python -m superpoint_training.synthetic_hpatches data/synthetic_hpatches            # scikit-image photos
    python -m superpoint_training.synthetic_hpatches out --photos ~/Pictures --sequences 20
    python -m superpoint_training.evaluate --dataset data/synthetic_hpatches --output results/synthetic
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .geometry import random_homography, warp_image
from .image_files import IMAGE_SUFFIXES

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


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Gray, RGB or RGBA, uint8 or float in [0, 1] to RGB uint8."""
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def fit_photo(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to cover ``size`` (H, W) keeping the aspect ratio, then centre crop."""
    h, w = image.shape[:2]
    scale = max(size[0] / h, size[1] / w)
    new = (max(size[1], round(w * scale)), max(size[0], round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, new, interpolation=interpolation)
    y, x = (new[1] - size[0]) // 2, (new[0] - size[1]) // 2
    return np.ascontiguousarray(image[y : y + size[0], x : x + size[1]])


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
        base = fit_photo(to_rgb(photo), size)
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


def parse_size(text: str) -> tuple[int, int]:
    """'480x640' -> (480, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected HxW like 480x640, got {text!r}") from error
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m superpoint_training.synthetic_hpatches",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(line for line in __doc__.splitlines() if "python -m" in line),
    )
    parser.add_argument("output", type=Path, help="folder to write the i_*/v_* sequences into")
    parser.add_argument("--photos", type=Path, help="folder of photos (default: scikit-image's sample photos)")
    parser.add_argument("--sequences", type=int, help="number of sequences (default: one per photo)")
    parser.add_argument("--size", type=parse_size, default=(480, 640), help="image size HxW (default 480x640)")
    parser.add_argument("--images", type=int, default=6, help="images per sequence, 2..6 (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        photos = folder_photos(args.photos) if args.photos else skimage_photos()
        folders = build(args.output, photos, args.sequences, args.size, args.images, args.seed)
    except (PhotosError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(folders)} sequences to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
