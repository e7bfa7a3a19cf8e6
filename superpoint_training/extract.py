"""Extract SuperPoint features from images or folders into the project's HDF5 layout or npz.

Keys are paths relative to the folder given (or the file name for an image given directly); the
layout is documented in :mod:`superpoint_training.common.feature_io`. Images of equal size share one
batch; unreadable files are skipped, counted and listed at the end.

Examples::

    python -m superpoint_training.extract photos/ --output features.h5
    python -m superpoint_training.extract a.png b.jpg --output ab.npz --max-keypoints 1000
    python -m superpoint_training.extract dataset/ --recursive --resize 640 --device cuda \\
        --precision fp16 --batch-size 16 --output dataset.h5 --overwrite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .common.cli import (
    add_extractor_arguments,
    command_parser,
    describe_path,
    docstring_examples,
    extractor_from_args,
    extractor_settings,
    flag,
)
from .common.feature_io import DESCRIPTOR_DTYPES, FeatureFileError, FeatureStore, file_kind
from .common.files import atomic_path
from .data.images import IMAGE_SUFFIXES, find_images, prefetch_images
from .model.batching import SizeBatcher
from .model.loading import WeightsError


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.extract",
        "Extract SuperPoint keypoints and descriptors from images or folders into HDF5 or npz "
        "(layout: see superpoint_training/feature_io.py).",
        docstring_examples(__doc__),
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    parser.add_argument("--output", "-o", required=True, help="output file: .h5/.hdf5 (HDF5) or .npz")
    add_extractor_arguments(parser)
    parser.add_argument(*flag("batch-size"), type=int, default=8,
                        help="images of equal size per batch (default: %(default)s)")
    parser.add_argument(*flag("descriptor-dtype"), choices=DESCRIPTOR_DTYPES, default="float32",
                        help="stored descriptor type (default: %(default)s)")
    parser.add_argument("--compression", choices=["gzip", "lzf"], default=None, help="HDF5 dataset compression")
    parser.add_argument("--recursive", "-r", action="store_true", help="also search sub-folders")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    try:
        file_kind(output)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        if output.exists() and not args.overwrite:
            raise FileExistsError(f"{output} exists (pass --overwrite to replace it)")
        images = find_images(args.inputs, args.recursive)
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {' '.join(args.inputs)}"
                                    + ("" if args.recursive else " (sub-folders need --recursive)"))
        extractor = extractor_from_args(args)
    except (OSError, ValueError, WeightsError, FeatureFileError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"SuperPoint: {extractor.weights_description} on {describe_path(extractor)}; "
          f"{len(images)} images -> {output}")
    config = extractor_settings(extractor, weights=str(args.weights))
    start = time.perf_counter()
    new_folder = not output.parent.exists()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed at the end: a failed or interrupted run leaves
    # nothing behind (and an existing file given with --overwrite stays until the new one is whole).
    try:
        with atomic_path(output, keep_suffix=True) as partial:  # the store picks HDF5 or npz by it
            store = FeatureStore.open(partial, "w", weights=extractor.weights_description, config=config,
                                      descriptor_dtype=args.descriptor_dtype, compression=args.compression)
            with store:
                skipped, n_images, n_keypoints = _extract_all(extractor, images, store, args)
            if not n_images:
                partial.unlink(missing_ok=True)  # nothing extracted: nothing replaced
    except (ImportError, OSError, FeatureFileError) as error:  # e.g. no h5py, disk full
        print(f"error: {error}; {output} not written", file=sys.stderr)
        return 2
    finally:
        if new_folder and not output.exists() and not any(output.parent.iterdir()):
            output.parent.rmdir()
    seconds = time.perf_counter() - start
    if n_images:
        print(f"wrote {n_images} images ({n_keypoints / n_images:.1f} keypoints per image) to {output} "
              f"in {seconds:.1f} s ({1000 * seconds / n_images:.1f} ms per image)")
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        print(f"skipped {len(skipped)} unreadable files: {shown}", file=sys.stderr)
    if not n_images:
        print(f"error: no image could be read; {output} not written", file=sys.stderr)
        return 1
    return 0


def _extract_all(extractor, images: list[tuple[str, Path]], store: FeatureStore, args: argparse.Namespace):
    """Extract every readable image into ``store``; returns (skipped paths, images written, keypoints)."""
    skipped: list[Path] = []
    n_keypoints = 0
    n_images = 0
    with tqdm(total=len(images), unit="img", disable=args.quiet, dynamic_ncols=True) as bar:

        def run(batch: list[tuple[str, Path, np.ndarray]]) -> None:
            nonlocal n_keypoints, n_images
            results = extractor([image for _, _, image in batch])
            for (key, path, _), features in zip(batch, results, strict=True):
                store.write(key, features, source=str(path))
                n_keypoints += len(features)
            n_images += len(batch)
            bar.update(len(batch))
            bar.set_postfix(kpts=f"{n_keypoints / max(n_images, 1):.0f}/img", skipped=len(skipped))

        batcher = SizeBatcher(args.batch_size)
        for key, path, image in prefetch_images(images):
            if image is None:
                skipped.append(path)
                bar.update(1)
                continue
            full = batcher.add(image, (key, path, image))
            if full:
                run(full)
        for batch in batcher.rest():
            run(batch)
    return skipped, n_images, n_keypoints


if __name__ == "__main__":
    sys.exit(main())
