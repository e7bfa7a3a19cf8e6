"""Write the real photos that ship with scikit-image as a tiny image folder (PNG files).

    python -m superpoint_training.write_skimage_photos data/skimage_photos
"""

from __future__ import annotations

import sys

from .common.cli import command_parser
from .data.images import PhotosError, write_skimage_photos


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "superpoint_training.write_skimage_photos",
        "Write the eleven photos that ship with scikit-image as PNG files: a tiny real image folder.",
        [
            "python -m superpoint_training.write_skimage_photos data/skimage_photos",
        ],
        heading="example:",
    )
    parser.add_argument("output", help="folder to write into")
    args = parser.parse_args(argv)
    try:
        written = write_skimage_photos(args.output)
    except (PhotosError, OSError) as error:  # e.g. scikit-image not installed: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} photos to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
