"""Contact sheet of Synthetic Shapes: the first images of each primitive with their corners circled,
drawn now (the same seeds as the cached dataset, which is not built).

    python -m superpoint_training.synthetic_shapes shapes.png
"""

from __future__ import annotations

import copy
import sys
import time

import cv2

from .common.cli import command_parser
from .common.config import ConfigError, read_yaml
from .data.shapes import PRIMITIVES
from .data.shapes_dataset import contact_sheet, sample_images


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "superpoint_training.synthetic_shapes",
        "Draw a contact sheet of Synthetic Shapes: the first images of each primitive, with their "
        "corners, drawn now (a second or two; the dataset is not built).",
        [
            "python -m superpoint_training.synthetic_shapes shapes.png",
            "python -m superpoint_training.synthetic_shapes cubes.png --primitives draw_cube draw_star --per-primitive 8",
            "python -m superpoint_training.synthetic_shapes shapes.png --config config/magic-point_shapes.yaml",
        ],
    )
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--per-primitive", type=int, default=4, help="images per primitive (default: %(default)s)")
    parser.add_argument("--primitives", nargs="+", choices=PRIMITIVES, default=list(PRIMITIVES))
    parser.add_argument("--config", help="YAML: a training config (its 'data' section) or a data config")
    parser.add_argument("--seed", type=int, help="generation.random_seed (default: the config's, 0)")
    parser.add_argument("--scale", type=int, default=2, help="enlargement of each image (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.per_primitive < 1 or args.scale < 1:
        parser.error("--per-primitive and --scale must be at least 1")

    try:
        data = read_yaml(args.config) if args.config else {}
        config = copy.deepcopy(dict(data.get("data", data)))
        if args.seed is not None:
            config.setdefault("generation", {})["random_seed"] = args.seed
        start = time.perf_counter()
        samples = sample_images(args.primitives, args.per_primitive, config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if not cv2.imwrite(args.output, contact_sheet(samples, args.scale)):
        print(f"error: could not write {args.output} (a .png path in an existing folder?)", file=sys.stderr)
        return 2
    count = sum(len(images) for images in samples.values())
    print(f"wrote {args.output}: {count} images ({len(samples)} primitives) drawn in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
