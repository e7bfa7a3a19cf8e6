"""Write warped validation pairs (HPatches layout) from a folder of images, once: the set that
SuperPoint training measures at every validation (``data.validation_patches``).

    python -m superpoint_training.write_validation_patches data/COCO/val2014 experiments/outputs/coco_patches
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common.cli import command_parser, flag
from .data.image_folder import list_images
from .data.validation_patches import COMPLETE, generate_patches


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "superpoint_training.write_validation_patches",
        "Write warped validation pairs (HPatches layout) from a folder of images, once.",
        [
            "python -m superpoint_training.write_validation_patches data/COCO/val2014 experiments/outputs/coco_patches --count 100",
        ],
        heading="example:",
    )
    parser.add_argument("images", help="folder of images (searched recursively, sorted)")
    parser.add_argument("output", help="output folder")
    parser.add_argument("--count", type=int, default=100, help="pairs (the first images of the folder)")
    parser.add_argument("--resize", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument(*flag("warped-scale"), type=float, default=0.5, help="scale of the warped image (reference 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        paths = list_images(Path(args.images))[: args.count]
        folder = generate_patches(paths, args.output, args.resize, args.warped_scale, seed=args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"validation patches in {folder}: {(folder / COMPLETE).read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
