"""Check a data folder before training or evaluating: ``python -m superpoint_training.check_data``.

For each dataset the configs read (MS-COCO 2014 train and val, HPatches sequences; Synthetic Shapes
is generated), it says where it looks, how many images or sequences it found against the official
release, their sizes (a sample is decoded), what is missing, and where the official archive is
published. It downloads nothing. Exit status 0 when every dataset checked is complete, 1 otherwise.
"""

from __future__ import annotations

import sys

from .common.cli import command_parser
from .data.dataset_check import DATASETS, SYNTHETIC_SHAPES_NOTE, check_dataset, data_root

EXAMPLES = """
  python -m superpoint_training.check_data                       # everything, under $SUPERPOINT_DATA_DIR
  python -m superpoint_training.check_data --data-dir ~/data coco_train2014 coco_val2014
  python -m superpoint_training.check_data hpatches --path ~/hpatches-sequences-release

Expected layout under the data folder ($SUPERPOINT_DATA_DIR):
  COCO/train2014/COCO_train2014_*.jpg     82,783 images
  COCO/val2014/COCO_val2014_*.jpg         40,504 images
  hpatches-sequences-release/{i,v}_*/     116 sequences: 1.ppm .. 6.ppm, H_1_2 .. H_1_6
"""


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "superpoint_training.check_data",
        "Check that a data folder holds the datasets the configs use; print what is missing "
        "and where to download it (nothing is downloaded).",
        EXAMPLES,
    )
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        help=f"which to check: {', '.join(DATASETS)} (default: all)")
    parser.add_argument("--data-dir", default=None, help="the data folder (default: $SUPERPOINT_DATA_DIR, else .)")
    parser.add_argument("--path", default=None, help="the dataset's own folder, for one DATASET in another place")
    parser.add_argument("--sample", type=int, default=20, help="images decoded for their sizes (0: none)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.datasets if name not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r} (known: {', '.join(DATASETS)})")
    names = list(dict.fromkeys(args.datasets)) or list(DATASETS)
    if args.path is not None and len(names) != 1:
        parser.error("--path needs exactly one DATASET")
    print(f"data folder: {data_root(args.data_dir)}")
    complete = True
    for name in names:
        result = check_dataset(name, args.data_dir, path=args.path, sample=max(args.sample, 0))
        complete &= result.complete
        print("\n".join(result.lines()))
    if not args.datasets:
        print(SYNTHETIC_SHAPES_NOTE)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
