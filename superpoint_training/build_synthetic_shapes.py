"""Build (or reuse) the cached Synthetic Shapes dataset, optionally with a contact sheet of it.

    python -m superpoint_training.build_synthetic_shapes --split-sizes 8 2 2 --contact-sheet /tmp/shapes.png
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .common.cli import command_parser
from .common.config import ConfigError, read_yaml
from .data.shapes import PRIMITIVES
from .data.shapes_dataset import (
    SPLITS,
    CorruptCacheError,
    cache_key,
    default_root,
    entry_complete,
    entry_path,
    generate_synthetic_shapes,
    load_entry,
    merge_config,
    remove_entry,
    worker_count,
    write_contact_sheet,
)


def _load_cli_config(path: str | None) -> dict:
    if path is None:
        return {}
    data = read_yaml(path)
    return dict(data.get("data", data)) if isinstance(data.get("data", data), Mapping) else {}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.build_synthetic_shapes",
        "Generate (or reuse) the cached Synthetic Shapes dataset and optionally write a contact sheet.",
        [
            "# the reference dataset (10000/200/500 images per primitive, 120x160) on all cores",
            "python -m superpoint_training.build_synthetic_shapes",
            "# the data section of a training config, and a contact sheet to check it at a glance",
            "python -m superpoint_training.build_synthetic_shapes --config config/magic-point_shapes.yaml --contact-sheet /tmp/shapes.png",
            "# a small set for a quick look",
            "python -m superpoint_training.build_synthetic_shapes --split-sizes 8 2 2 --contact-sheet /tmp/shapes.png",
        ],
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
    missing = sum(sizes[s] for p in config["primitives"] for s in SPLITS if not entry_complete(entry_path(target, p, s)))
    workers = worker_count() if args.workers is None else max(args.workers, 1)
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
                path = entry_path(directory, primitive, split)
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
