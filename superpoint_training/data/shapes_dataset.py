"""The Synthetic Shapes dataset: generated in parallel once, cached on disk, served as a torch Dataset.

The cache ``<root>/<key>/`` (root ``$SUPERPOINT_DATA_DIR/synthetic_shapes``, else
``~/.cache/superpoint_ros/synthetic_shapes``; key: a hash of what changes the images) holds one
``<primitive>_<split>.npz`` per primitive and split, completed by a ``.sha256`` marker written last: a
file without a valid marker is regenerated, never trained on. Each image has its own seed, so the
content does not depend on the number of workers. The config is the reference's ``data`` section of
``magic-point_shapes.yaml``, merged strictly.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..common.config import ConfigError, merge_strict
from ..common.files import atomic_write_bytes
from .augmentation import PRESETS as PHOTOMETRIC_PRESETS
from .augmentation import PhotometricAugmentation, merge_photometric_config, parse_primitives
from .homographies import SHAPES_HOMOGRAPHIC, HomographicAugmentation
from .shapes import DEFAULT_BLUR_SIZE, DEFAULT_IMAGE_SIZE, DEFAULT_PARAMS, DEFAULT_RESIZE, PRIMITIVES, draw_image

GENERATOR_VERSION = 1  # bump when a change of synthetic_shapes.py changes the images
SPLITS: tuple[str, ...] = ("training", "validation", "test")
SPLIT_ALIASES = {"training": "training", "train": "training", "validation": "validation", "val": "validation",
                 "test": "test"}

DEFAULT_CONFIG: dict[str, Any] = {
    "name": "synthetic_shapes",
    "primitives": "all",
    "truncate": {"draw_ellipses": 0.3, "draw_stripes": 0.2, "gaussian_noise": 0.1},
    "validation_size": 500,  # images taken from the shuffled validation split (-1: all)
    "test_size": -1,
    "suffix": "v6",
    "cache_in_memory": True,  # accepted for the reference's configs; the data always sits in memory
    "add_augmentation_to_test_set": False,
    "generation": {
        "split_sizes": {"training": 10000, "validation": 200, "test": 500},  # per primitive
        "image_size": [960, 1280],
        "random_seed": 0,
        "params": DEFAULT_PARAMS,
    },
    "preprocessing": {"resize": [120, 160], "blur_size": 21},
    "augmentation": {
        "photometric": {"enable": True, "primitives": "all", "random_order": True,
                        "params": PHOTOMETRIC_PRESETS["shapes"]},
        "homographic": SHAPES_HOMOGRAPHIC,
    },
}


class CorruptCacheError(RuntimeError):
    """A cache file that is missing, truncated or does not match its checksum."""


def merge_config(config: Mapping | None) -> dict[str, Any]:
    """``config`` merged strictly over DEFAULT_CONFIG (ConfigError naming any unknown key or wrong type)."""
    config = copy.deepcopy(dict(config or {}))
    primitives = config.pop("primitives", "all")
    truncate = config.pop("truncate", DEFAULT_CONFIG["truncate"])
    augmentation = config.pop("augmentation", {})
    base = {k: v for k, v in DEFAULT_CONFIG.items() if k not in ("primitives", "truncate", "augmentation")}
    merged = merge_strict(base, config)
    if merged["name"] != "synthetic_shapes":
        raise ConfigError(f"name: expected 'synthetic_shapes', got {merged['name']!r}")
    if merged["suffix"] is not None and not isinstance(merged["suffix"], str):
        raise ConfigError(f"suffix: expected a string or null, got {merged['suffix']!r}")
    merged["primitives"] = parse_primitives(primitives, PRIMITIVES, "primitives")
    if not isinstance(truncate, Mapping):
        raise ConfigError(f"truncate: expected a mapping of primitive to fraction, got {truncate!r}")
    for key, value in truncate.items():
        if key not in PRIMITIVES:
            raise ConfigError(f"truncate.{key}: unknown primitive (known: {', '.join(PRIMITIVES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"truncate.{key}: expected a fraction in [0, 1], got {value!r}")
    merged["truncate"] = dict(truncate)
    if not isinstance(augmentation, Mapping):
        raise ConfigError(f"augmentation: expected a mapping, got {augmentation!r}")
    unknown = set(augmentation) - {"photometric", "homographic"}
    if unknown:
        raise ConfigError(f"augmentation.{sorted(unknown)[0]}: unknown key (known: homographic, photometric)")
    # A section given without "params" keeps the shapes values; params given replace them, and what
    # they leave out takes the reference functions' defaults (as in the reference).
    sections = {}
    for name in ("photometric", "homographic"):
        user = augmentation.get(name) or {}
        if not isinstance(user, Mapping):
            raise ConfigError(f"augmentation.{name}: expected a mapping, got {user!r}")
        sections[name] = {**copy.deepcopy(DEFAULT_CONFIG["augmentation"][name]), **copy.deepcopy(dict(user))}
    merged["augmentation"] = {
        "photometric": merge_photometric_config(sections["photometric"], "augmentation.photometric"),
        "homographic": HomographicAugmentation(sections["homographic"], "augmentation.homographic").config,
    }
    gen, pre = merged["generation"], merged["preprocessing"]
    for name, value in (("generation.image_size", gen["image_size"]), ("preprocessing.resize", pre["resize"])):
        if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
            raise ConfigError(f"{name}: expected [height, width] positive ints, got {value!r}")
    if pre["blur_size"] % 2 != 1:
        raise ConfigError(f"preprocessing.blur_size: expected an odd int, got {pre['blur_size']!r}")
    for split, size in gen["split_sizes"].items():
        if size < 0:
            raise ConfigError(f"generation.split_sizes.{split}: expected >= 0, got {size}")
    return merged


def cache_key(config: Mapping) -> str:
    """The folder name of a config's cache: ``<suffix>_<hash>`` of what changes the images."""
    config = merge_config(config)
    content = {"version": GENERATOR_VERSION, "generation": config["generation"],
               "preprocessing": config["preprocessing"], "suffix": config["suffix"]}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return f"{config['suffix']}_{digest}" if config["suffix"] else digest


def default_root() -> Path:
    base = os.environ.get("SUPERPOINT_DATA_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "superpoint_ros") / "synthetic_shapes"


def image_seed(random_seed: int, primitive: str, split: str, index: int) -> int:
    """The seed of one image: independent streams per (seed, primitive, split, index)."""
    sequence = np.random.SeedSequence([random_seed, PRIMITIVES.index(primitive), SPLITS.index(split), index])
    return int(sequence.generate_state(1, np.uint64)[0])


def settings(config: Mapping | None) -> tuple[tuple[int, int], dict, tuple[int, int], int]:
    """(image_size, params, resize, blur_size) from a dataset config or defaults."""
    if config is None:
        return DEFAULT_IMAGE_SIZE, copy.deepcopy(DEFAULT_PARAMS), DEFAULT_RESIZE, DEFAULT_BLUR_SIZE
    if "generation" in config or "preprocessing" in config:
        config = merge_config(config)
        generation, preprocessing = config["generation"], config["preprocessing"]
        return (tuple(generation["image_size"]), generation["params"], tuple(preprocessing["resize"]),
                int(preprocessing["blur_size"]))
    raise KeyError("config must be a dataset config with 'generation' / 'preprocessing' sections, or None")


def generate_image(primitive: str, seed: int, config: Mapping | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one Synthetic Shapes image: background, ``primitive``, Gaussian blur, resize.

    Returns the image (uint8 (H, W) at the config's ``preprocessing.resize``) and its corners
    (float32 (N, 2) (x, y) in that image). The same (primitive, seed, config) gives the same image.
    """
    return draw_image(primitive, seed, *settings(config))


def sample_images(
    primitives: tuple[str, ...] | list[str] = PRIMITIVES, per_primitive: int = 4, config: Mapping | None = None
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The first ``per_primitive`` training images of each primitive, drawn now: the same seeds, so
    the same images as the cached dataset  holds."""
    config = merge_config(config or {})
    unpacked = settings(config)
    seed = config["generation"]["random_seed"]
    return {
        primitive: [draw_image(primitive, image_seed(seed, primitive, "training", i), *unpacked)
                    for i in range(per_primitive)]
        for primitive in primitives
    }  # fmt: skip


def contact_sheet(samples: Mapping[str, list[tuple[np.ndarray, np.ndarray]]], scale: int = 2) -> np.ndarray:
    """A BGR picture with one row per primitive: its name, then its images enlarged ``scale`` times
    with every corner circled in red."""
    rows = []
    for primitive, images in samples.items():
        height = max(image.shape[0] for image, _ in images) * scale
        name = np.full((height, 190, 3), 255, np.uint8)
        cv2.putText(name, primitive.removeprefix("draw_"), (8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
        cells = [name]
        for image, corners in images:
            big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            cell = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
            for x, y in (corners + 0.5) * scale - 0.5:  # pixel centres scale about the half-pixel
                cv2.circle(cell, (round(x), round(y)), scale + 1, (0, 0, 255), 1, cv2.LINE_AA)
            pad = ((2, 2 + height - cell.shape[0]), (2, 2), (0, 0))
            cells.append(np.pad(cell, pad, constant_values=255))
        cells[0] = np.pad(cells[0], ((2, 2), (0, 0), (0, 0)), constant_values=255)
        rows.append(np.hstack(cells))
    width = max(row.shape[1] for row in rows)
    return np.vstack([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows])


def entry_path(directory: Path, primitive: str, split: str) -> Path:
    return directory / f"{primitive}_{split}.npz"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _save_entry(path: Path, images: np.ndarray, keypoints: list[np.ndarray]) -> None:
    offsets = np.zeros(len(keypoints) + 1, np.int64)
    offsets[1:] = np.cumsum([len(k) for k in keypoints])
    points = np.concatenate(keypoints).astype(np.float32) if keypoints else np.empty((0, 2), np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, keypoints=points.reshape(-1, 2), offsets=offsets)
    data = buffer.getvalue()
    atomic_write_bytes(path, data, fsync=True)
    marker = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    atomic_write_bytes(_marker(path), json.dumps(marker).encode(), fsync=True)


def entry_complete(path: Path) -> bool:
    """Cheap check: the file and its marker exist and the size matches (the checksum is checked on load)."""
    try:
        marker = json.loads(_marker(path).read_text())
        return path.stat().st_size == int(marker["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_entry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8, keypoints (M, 2) float32, offsets (N + 1,)) of a cache file, checksum checked."""
    try:
        marker = json.loads(_marker(path).read_text())
        data = path.read_bytes()
    except (OSError, ValueError) as error:
        raise CorruptCacheError(f"{path}: missing or unreadable ({error})") from error
    if hashlib.sha256(data).hexdigest() != marker.get("sha256"):
        raise CorruptCacheError(f"{path}: checksum mismatch")
    try:
        with np.load(io.BytesIO(data)) as archive:
            images, keypoints, offsets = archive["images"], archive["keypoints"], archive["offsets"]
    except Exception as error:  # a bad archive despite a matching checksum: treat as corrupt
        raise CorruptCacheError(f"{path}: unreadable archive ({error})") from error
    if images.ndim != 3 or len(offsets) != len(images) + 1 or offsets[-1] != len(keypoints):
        raise CorruptCacheError(f"{path}: inconsistent arrays")
    return images, keypoints, offsets


def remove_entry(path: Path) -> None:
    for file in (_marker(path), path):  # marker first: a half-removed entry reads as incomplete
        file.unlink(missing_ok=True)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder so that several processes (DDP ranks) generate once."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (atomic writes still keep the cache consistent)
        yield
        return
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one core per process


def _generate_chunk(task: tuple) -> tuple:
    primitive, split, start, stop, config = task
    images, keypoints = [], []
    unpacked = settings(config)
    for index in range(start, stop):
        seed = image_seed(config["generation"]["random_seed"], primitive, split, index)
        image, points = draw_image(primitive, seed, *unpacked)
        images.append(image)
        keypoints.append(points)
    return primitive, split, start, np.stack(images), keypoints


def worker_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def generate_synthetic_shapes(
    config: Mapping | None,
    root: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    primitives: list[str] | None = None,
) -> Path:
    """Generate (or reuse) the cached dataset of ``config``; returns its folder ``<root>/<key>``.

    Only entries that are missing or incomplete are generated, on ``workers`` processes (default:
    all cores; 0 or 1: in this process). ``primitives`` defaults to the config's.
    """
    config = merge_config(config)
    directory = Path(root) if root is not None else default_root()
    directory = directory / cache_key(config)
    wanted = primitives if primitives is not None else config["primitives"]
    sizes = config["generation"]["split_sizes"]
    with _locked(directory):
        info = {"generator_version": GENERATOR_VERSION, "generation": config["generation"],
                "preprocessing": config["preprocessing"], "suffix": config["suffix"]}
        (directory / "config.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        todo = [(p, s) for p in wanted for s in SPLITS if not entry_complete(entry_path(directory, p, s))]
        if not todo:
            return directory
        _generate_entries(directory, config, todo, sizes, workers, progress)
    return directory


def _generate_entries(directory: Path, config: dict, todo: list, sizes: Mapping, workers, progress: bool) -> None:
    from tqdm import tqdm

    chunk = 32
    tasks = [(p, s, start, min(start + chunk, sizes[s]), config)
             for p, s in todo for start in range(0, sizes[s], chunk)]
    buffers = {(p, s): [None] * sizes[s] for p, s in todo}
    points = {(p, s): [None] * sizes[s] for p, s in todo}
    remaining = {(p, s): sizes[s] for p, s in todo}
    h, w = config["preprocessing"]["resize"]
    for p, s in todo:  # empty splits are written at once
        if sizes[s] == 0:
            _save_entry(entry_path(directory, p, s), np.zeros((0, h, w), np.uint8), [])
    workers = worker_count() if workers is None else max(int(workers), 1)
    total = sum(sizes[s] for _, s in todo)
    bar = tqdm(total=total, desc=f"Synthetic Shapes ({workers} workers)", unit="img", disable=not progress,
               dynamic_ncols=True)

    def consume(result):
        primitive, split, start, images, keypoints = result
        key = (primitive, split)
        for offset, (image, kp) in enumerate(zip(images, keypoints, strict=True)):
            buffers[key][start + offset] = image
            points[key][start + offset] = kp
        remaining[key] -= len(images)
        bar.update(len(images))
        if remaining[key] == 0:
            _save_entry(entry_path(directory, primitive, split), np.stack(buffers[key]), points[key])
            buffers[key] = points[key] = None  # free memory

    try:
        if workers == 1 or len(tasks) <= 1:
            _worker_init()
            for task in tasks:
                consume(_generate_chunk(task))
        else:
            # Not "fork": a child forked from a process whose OpenCV / torch thread pools are running can
            # hang. The fork server starts clean, imports this module once, and forks the workers from it.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                context.set_forkserver_preload(["superpoint_training.data.shapes_dataset"])
            with context.Pool(min(workers, len(tasks)), initializer=_worker_init) as pool:
                for result in pool.imap_unordered(_generate_chunk, tasks):
                    consume(result)
    finally:
        bar.close()


class SyntheticShapes(torch.utils.data.Dataset):
    """One split of Synthetic Shapes, loaded from the cache (generated first when needed).

    Items: {"image": float32 (1, H, W) in [0, 1], "keypoint_map": float32 (H, W) 0/1,
    "valid_mask": float32 (H, W) ones, "name": str}. ``split``: training/validation/test
    (or train/val). The images of all primitives are shuffled together with a fixed seed (as the
    reference); ``truncate`` keeps a fraction of a primitive's images; ``validation_size`` and
    ``test_size`` keep the first images of those splits (-1: all).
    """

    merge_config = staticmethod(merge_config)  # the trainer checks the data section with it

    def __init__(
        self,
        config: Mapping | None,
        split: str,
        root: str | os.PathLike | None = None,
        workers: int | None = None,
        progress: bool = True,
        apply_photometric: bool = True,
    ):
        if split not in SPLIT_ALIASES:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLIT_ALIASES)})")
        self.config = merge_config(config)
        self.split = SPLIT_ALIASES[split]
        self.directory = generate_synthetic_shapes(self.config, root, workers, progress)
        images, keypoints, names = [], [], []
        for primitive in self.config["primitives"]:
            path = entry_path(self.directory, primitive, self.split)
            try:
                entry = load_entry(path)
            except CorruptCacheError as error:
                print(f"warning: {error}; regenerating", file=sys.stderr)
                remove_entry(path)
                generate_synthetic_shapes(self.config, root, workers, progress, primitives=[primitive])
                entry = load_entry(path)
            prim_images, prim_points, offsets = entry
            count = int(self.config["truncate"].get(primitive, 1.0) * len(prim_images))
            images.append(prim_images[:count])
            keypoints.extend(prim_points[offsets[i]:offsets[i + 1]] for i in range(count))
            names.extend(f"{primitive}/{self.split}/{i:05d}" for i in range(count))
        h, w = self.config["preprocessing"]["resize"]
        all_images = np.concatenate(images) if images else np.zeros((0, h, w), np.uint8)
        order = np.random.RandomState(0).permutation(len(all_images))
        limit = {"validation": self.config["validation_size"], "test": self.config["test_size"]}.get(self.split, -1)
        if limit >= 0:
            order = order[:limit]
        self.images = all_images[order]
        self.keypoints = [keypoints[i] for i in order]
        self.names = [names[i] for i in order]
        augment = self.split == "training" or self.config["add_augmentation_to_test_set"]
        photometric = PhotometricAugmentation(self.config["augmentation"]["photometric"])
        self.photometric = photometric if (apply_photometric and augment and photometric.enabled) else None

    def __len__(self) -> int:
        return len(self.images)

    def keypoint_map(self, index: int) -> torch.Tensor:
        h, w = self.images.shape[1:]
        kmap = torch.zeros((h, w), dtype=torch.float32)
        points = torch.from_numpy(np.round(self.keypoints[index])).long()
        if len(points):
            kmap[points[:, 1].clamp(0, h - 1), points[:, 0].clamp(0, w - 1)] = 1.0
        return kmap

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = torch.from_numpy(self.images[index]).float().div(255)[None]
        if self.photometric is not None:
            image = self.photometric(image)
        return {
            "image": image,
            "keypoint_map": self.keypoint_map(index),
            "valid_mask": torch.ones(image.shape[-2:], dtype=torch.float32),
            "name": self.names[index],
        }


# --------------------------------------------------------------------------------------------------
# Contact sheet of the cached images


def write_contact_sheet(
    directory: str | os.PathLike,
    path: str | os.PathLike,
    primitives: list[str] | tuple[str, ...] = PRIMITIVES,
    per_primitive: int = 4,
    split: str = "training",
    scale: int = 2,
) -> Path:
    """:func:`contact_sheet` of the first cached images of each primitive, written as a PNG."""
    samples = {}
    for primitive in primitives:
        entry = entry_path(Path(directory), primitive, SPLIT_ALIASES[split])
        if entry.exists():
            images, keypoints, offsets = load_entry(entry)
            samples[primitive] = [(images[i], keypoints[offsets[i] : offsets[i + 1]])
                                  for i in range(min(per_primitive, len(images)))]
    samples = {primitive: images for primitive, images in samples.items() if images}
    if not samples:
        raise FileNotFoundError(f"no cached images of {list(primitives)} in {directory}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), contact_sheet(samples, scale)):
        raise OSError(f"could not write {path}")
    return path
