"""Write the real photos that ship with scikit-image as a tiny image folder (PNG files).

    python -m superpoint_training.write_skimage_photos data/skimage_photos
"""

from __future__ import annotations

import argparse

from .data.images import write_skimage_photos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m superpoint_training.write_skimage_photos",
        description="Write the eleven photos that ship with scikit-image as PNG files: a tiny real image folder.",
        epilog="example:\n  python -m superpoint_training.write_skimage_photos data/skimage_photos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", help="folder to write into")
    args = parser.parse_args(argv)
    written = write_skimage_photos(args.output)
    print(f"wrote {len(written)} photos to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
