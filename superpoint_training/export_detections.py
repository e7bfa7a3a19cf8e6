"""Export Homographic Adaptation labels for a folder of images (the reference's ``export_detections.py``).

    python -m superpoint_training.export_detections CONFIG EXPERIMENT --export-name NAME

For every image under ``data.images`` (MS-COCO's ``train2014/`` or any folder), preprocessed as in
training (:mod:`superpoint_training.data.image_folder`), the detector's probability maps are
aggregated over ``model.homography_adaptation.num`` homographies on the device
(:mod:`superpoint_training.training.homographic_adaptation`), then NMS, threshold and top-k select the
keypoints. One label file per image is written under ``$SUPERPOINT_EXPER_DIR/outputs/NAME/``
(format: :data:`superpoint_training.data.image_folder.LABEL_FORMAT`).

- Weights: ``--weights`` (a file or a name), else ``$SUPERPOINT_EXPER_DIR/EXPERIMENT/weights.pth``,
  else the named weights when EXPERIMENT is a name (``magicpoint_shapes``); any other experiment
  that does not exist is an error that lists those that do.
- Resumable: images whose label file exists are skipped; each file is written to a temporary
  name and renamed, so an interruption never leaves half a file.
- Unreadable images are skipped, counted and listed in ``unreadable.txt``.
- Several GPUs: ``torchrun --nproc_per_node G -m superpoint_training.export_detections ...``; rank r
  takes every G-th image (no communication), each rank writes ``summary_rank<r>.yaml``.
"""

from __future__ import annotations

import json
import logging
import sys

from .common.cli import command_parser, flag
from .common.config import ConfigError
from .data.image_folder import LABEL_FORMAT, DataError
from .model.loading import WeightsError
from .training.pseudo_labels import build_config, export

log = logging.getLogger(__name__)


EXAMPLES = f"""
  python -m superpoint_training.export_detections config/magic-point_coco_export.yaml magic-point_synth \\
      --export-name magic-point_coco-export1
  python -m superpoint_training.export_detections config/magic-point_coco_export.yaml magicpoint_shapes \\
      --export-name shapes_labels   # the shipped MagicPoint, by name
  python -m superpoint_training.export_detections config/magic-point_coco_export.yaml none \\
      --weights magicpoint_shapes --images data/skimage_photos --export-name skimage_ha --batch-size 2
  torchrun --nproc_per_node 4 -m superpoint_training.export_detections config/magic-point_coco_export.yaml \\
      magic-point_synth --export-name magic-point_coco-export1

Run the same command again to resume. Labels land in $SUPERPOINT_EXPER_DIR/outputs/EXPORT_NAME/.

{LABEL_FORMAT}"""


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("superpoint_training.export_detections",
                            "Homographic Adaptation: export keypoint labels for every image of a folder.", EXAMPLES)
    parser.add_argument("config", help="YAML config (config/magic-point_coco_export.yaml)")
    parser.add_argument("experiment_name", help="experiment whose weights.pth to use (under $SUPERPOINT_EXPER_DIR)")
    parser.add_argument(*flag("export-name"), default=None, help="output folder name (default: the experiment name)")
    parser.add_argument(*flag("pred-only"), action="store_true", help="write only the keypoints (no probability map)")
    parser.add_argument(*flag("batch-size"), type=int, default=None, help="images per batch (model.batch_size)")
    parser.add_argument("--weights", default=None, help="weights file or name instead of the experiment's")
    parser.add_argument("--images", default=None, help="image folder (data.images)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value, e.g. --set model.homography_adaptation.num=10")
    parser.add_argument(*flag("no-progress"), action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.batch_size is not None:
        overrides.append(f"model.batch_size={args.batch_size}")
    if args.images is not None:
        overrides.append(f"data.images={json.dumps(args.images)}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    try:
        config = build_config(args.config, overrides)
        export(config, args.experiment_name, args.export_name or args.experiment_name, weights=args.weights,
               pred_only=args.pred_only, show_progress=not args.no_progress)
    except (ConfigError, WeightsError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
