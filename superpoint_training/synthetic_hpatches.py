"""Build HPatches-layout sequences from any photos, for a quick check without downloading HPatches.

Each photo gives one sequence: ``v_<name>`` (viewpoint) holds the photo as ``1.ppm`` and five views
warped by random homographies (:func:`superpoint_training.data.geometry.random_homography`);
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
from pathlib import Path

from .common.cli import command_parser
from .data.hpatches import build
from .data.images import PhotosError, folder_photos, skimage_photos


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
    parser = command_parser(
        "superpoint_training.synthetic_hpatches",
        __doc__.split("\n\n")[0],
        "\n".join(line for line in __doc__.splitlines() if "python -m" in line),
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
