"""The Synthetic Shapes dataset: generated in parallel once, cached on disk, served as a torch Dataset.

The cache lives in ``<root>/<key>/`` where ``root`` defaults to ``$SUPERPOINT_DATA_DIR/synthetic_shapes``
(``~/.cache/superpoint_ros/synthetic_shapes`` when unset) and ``key`` hashes everything that changes the
images (generation and preprocessing settings, suffix, generator version). It holds one
``<primitive>_<split>.npz`` per primitive and split (``images`` uint8 (N, H, W), ``keypoints`` float32
(M, 2) (x, y) of all images concatenated, ``offsets`` int64 (N + 1,): image i owns
``keypoints[offsets[i]:offsets[i + 1]]``), each followed by a ``.sha256`` file written last (the
completion marker: checksum and size). A file without its marker, or whose checksum does not match
when it is loaded, is regenerated, never trained on. Image i of a primitive and split is drawn from
its own seed, so the content does not depend on the number of workers.

The config is the reference's ``data`` section of ``magic-point_shapes.yaml`` (defaults below are
those values); unknown keys raise an error naming them. The dataset applies the photometric
augmentation per sample (training split, or every split with ``add_augmentation_to_test_set``) unless
``apply_photometric=False``; the homographic augmentation is the trainer's job, batched on the device
(``superpoint_training.homographies.HomographicAugmentation(config["augmentation"]["homographic"])``).

    python -m superpoint_training.datasets.synthetic --contact-sheet /tmp/shapes.png
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..augmentation import PRESETS as PHOTOMETRIC_PRESETS
from ..augmentation import PhotometricAugmentation, merge_photometric_config, parse_primitives
from ..config import ConfigError, merge_strict
from ..homographies import SHAPES_HOMOGRAPHIC, HomographicAugmentation
from ..synthetic_shapes import DEFAULT_PARAMS, PRIMITIVES, draw_image, settings

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


def _file(directory: Path, primitive: str, split: str) -> Path:
    return directory / f"{primitive}_{split}.npz"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _save_entry(path: Path, images: np.ndarray, keypoints: list[np.ndarray]) -> None:
    offsets = np.zeros(len(keypoints) + 1, np.int64)
    offsets[1:] = np.cumsum([len(k) for k in keypoints])
    points = np.concatenate(keypoints).astype(np.float32) if keypoints else np.empty((0, 2), np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, keypoints=points.reshape(-1, 2), offsets=offsets)
    data = buffer.getvalue()
    _write_atomic(path, data)
    marker = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    _write_atomic(_marker(path), json.dumps(marker).encode())


def _entry_complete(path: Path) -> bool:
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
    import cv2

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


def _cpu_count() -> int:
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
        todo = [(p, s) for p in wanted for s in SPLITS if not _entry_complete(_file(directory, p, s))]
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
            _save_entry(_file(directory, p, s), np.zeros((0, h, w), np.uint8), [])
    workers = _cpu_count() if workers is None else max(int(workers), 1)
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
            _save_entry(_file(directory, primitive, split), np.stack(buffers[key]), points[key])
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
                context.set_forkserver_preload(["superpoint_training.datasets.synthetic"])
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
            path = _file(self.directory, primitive, self.split)
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
# Contact sheet and CLI


def write_contact_sheet(
    directory: str | os.PathLike,
    path: str | os.PathLike,
    primitives: list[str] | tuple[str, ...] = PRIMITIVES,
    per_primitive: int = 4,
    split: str = "training",
    scale: int = 2,
) -> Path:
    """A PNG grid: one row per primitive, its first images upscaled with the corners drawn in red."""
    import cv2

    rows = []
    label_width = 190
    for primitive in primitives:
        entry = _file(Path(directory), primitive, SPLIT_ALIASES[split])
        if not entry.exists():
            continue
        images, keypoints, offsets = load_entry(entry)
        h, w = images.shape[1] * scale, images.shape[2] * scale
        label = np.full((h, label_width, 3), 255, np.uint8)
        cv2.putText(label, primitive.replace("draw_", ""), (8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                    cv2.LINE_AA)
        tiles = [label]
        for i in range(per_primitive):
            tile = np.full((h, w, 3), 255, np.uint8)
            if i < len(images):
                tile = cv2.cvtColor(cv2.resize(images[i], (w, h), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
                for x, y in keypoints[offsets[i]:offsets[i + 1]]:
                    centre = (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5)))
                    cv2.circle(tile, centre, max(2, scale + 1), (0, 0, 255), 1, cv2.LINE_AA)
            tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        height = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles]
        rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        raise FileNotFoundError(f"no cached images of {list(primitives)} in {directory}")
    sheet = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")
    return path


def _load_cli_config(path: str | None) -> dict:
    if path is None:
        return {}
    from ..config import read_yaml

    data = read_yaml(path)
    return dict(data.get("data", data)) if isinstance(data.get("data", data), Mapping) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m superpoint_training.datasets.synthetic",
        description="Generate (or reuse) the cached Synthetic Shapes dataset and optionally write a contact sheet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  # the reference dataset (10000/200/500 images per primitive, 120x160) on all cores
  python -m superpoint_training.datasets.synthetic
  # the data section of a training config, and a contact sheet to check it at a glance
  python -m superpoint_training.datasets.synthetic --config config/magic-point_shapes.yaml --contact-sheet /tmp/shapes.png
  # a small set for a quick look
  python -m superpoint_training.datasets.synthetic --split-sizes 8 2 2 --contact-sheet /tmp/shapes.png""",
    )
    parser.add_argument("--config", help="YAML file: a training config (its 'data' section) or a data config")
    parser.add_argument("--root", help="cache root (default: $SUPERPOINT_DATA_DIR/synthetic_shapes or "
                        "~/.cache/superpoint_ros/synthetic_shapes)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--primitives", nargs="+", choices=PRIMITIVES, help="only these primitives")
    parser.add_argument("--split-sizes", nargs=3, type=int, metavar=("TRAIN", "VAL", "TEST"),
                        help="images per primitive in each split (default 10000 200 500)")
    parser.add_argument("--seed", type=int, help="generation.random_seed")
    parser.add_argument("--contact-sheet", metavar="PNG", help="write a grid of images with their corners drawn")
    parser.add_argument("--per-primitive", type=int, default=4, help="images per primitive on the contact sheet")
    parser.add_argument("--verify", action="store_true", help="check every file's checksum (regenerate bad ones)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        config = _load_cli_config(args.config)
        generation = config.setdefault("generation", {})
        if args.split_sizes:
            generation["split_sizes"] = dict(zip(SPLITS, args.split_sizes, strict=True))
        if args.seed is not None:
            generation["random_seed"] = args.seed
        if args.primitives:
            config["primitives"] = args.primitives
        config = merge_config(config)
    except ConfigError as error:
        parser.error(str(error))
    sizes = config["generation"]["split_sizes"]
    target = (Path(args.root) if args.root else default_root()) / cache_key(config)
    missing = sum(sizes[s] for p in config["primitives"] for s in SPLITS if not _entry_complete(_file(target, p, s)))
    workers = _cpu_count() if args.workers is None else max(args.workers, 1)
    start = time.perf_counter()
    directory = generate_synthetic_shapes(config, args.root, args.workers, not args.no_progress)
    elapsed = time.perf_counter() - start
    if missing:
        rate = missing / max(elapsed, 1e-9)
        print(f"generated {missing} images in {elapsed:.1f} s: {rate:.1f} images/s, "
              f"{rate / min(workers, max(missing, 1)):.1f} per worker (workers: {workers}, start-up included)")
    if args.verify:
        for primitive in config["primitives"]:
            for split in SPLITS:
                path = _file(directory, primitive, split)
                try:
                    load_entry(path)
                except CorruptCacheError as error:
                    print(f"{error}; regenerating", file=sys.stderr)
                    remove_entry(path)
        directory = generate_synthetic_shapes(config, args.root, args.workers, not args.no_progress)
    count = len(config["primitives"]) * sum(sizes.values())
    print(f"{directory}: {len(config['primitives'])} primitives x {sizes} = {count} images")
    if args.contact_sheet:
        sheet = write_contact_sheet(directory, args.contact_sheet, config["primitives"], args.per_primitive)
        print(f"contact sheet: {sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
