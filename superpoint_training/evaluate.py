"""HPatches evaluation of SuperPoint and classical baselines: export once, metrics from the cache,
a report (Markdown and JSON) laid out like the reference README's tables, and plots.

The reference's two protocols are presets:

- ``detector``: images at 240x320, NMS radius 4, the 300 best points in the shared view;
  repeatability and localisation error (distance 3 px).
- ``descriptor``: images at 480x640, NMS radius 8, up to 1000 points in the shared view;
  homography correctness at e = 1, 3, 5, matching score and nearest-neighbour mAP.

``--preset project`` (default) runs them as this project does (the weights' threshold and border
removal, max-pool NMS, 3000 / 5000 points kept per image); ``--preset reference`` as the reference's
evaluation does (threshold 0.001, box NMS of size 4 / 8 with IoU 0.1, no border removal, the best
1000 points per image): :mod:`superpoint_training.evaluation.presets`. The report names the preset.

Predictions go to ``OUTPUT/cache/<protocol>/<method>-<settings hash>/<sequence>/<k>.npz`` (one file
per image, so image 1 of a sequence is computed once for its five pairs); a run with the same
settings reuses them. SuperPoint runs through :class:`superpoint_training.Extractor` (batched,
on the GPU when there is one), the classical methods through OpenCV on CPU threads.

Examples::

    python -m superpoint_training.evaluate --dataset data/hpatches-sequences-release --output results/hpatches
    python -m superpoint_training.evaluate --dataset data/hpatches-sequences-release --methods superpoint,sift \\
        --protocol descriptor --weights superpoint_v6_from_tf --weights superpoint_ros --output results/v6_vs_ours
    python -m superpoint_training.synthetic_hpatches data/synthetic_hpatches --sequences 10
    python -m superpoint_training.evaluate --dataset data/synthetic_hpatches --output results/synthetic
    python -m superpoint_training.evaluate --dataset data/hpatches-sequences-release --preset reference \
        --methods superpoint --output results/reference_protocol
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from .common.cli import command_parser, docstring_examples
from .data.hpatches import RESIZE_MODES, SPLITS, HPatchesError
from .evaluation.hpatches_run import run
from .evaluation.methods import ALL_METHODS
from .evaluation.presets import PRESETS
from .evaluation.report import format_value
from .model.loading import WeightsError


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.evaluate",
        __doc__.split("\n\n")[0],
        docstring_examples(__doc__),
    )
    parser.add_argument("--dataset", required=True, help="HPatches release folder (i_*/v_* sequences)")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma list from {','.join(ALL_METHODS)}")
    parser.add_argument("--protocol", choices=("detector", "descriptor", "both"), default="both")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="project",
                        help="project: this project's protocol (default); reference: rpautrat/SuperPoint's "
                        "(threshold 0.001, box NMS 4 / 8 with IoU 0.1, no border removal, top 1000 at export)")
    parser.add_argument(
        "--weights", action="append",
        help="SuperPoint weights (name or file); repeat to compare several (default: 'default')",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="folder for report.md, report.json, plots/ and cache/")
    parser.add_argument("--cache", help="prediction cache folder (default OUTPUT/cache)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="reference",
                        help="reference: resize + centre crop to the protocol's size (default); "
                        "short_side: short side to --short-side; none: as they are")  # fmt: skip
    parser.add_argument(
        "--short-side", type=int,
        help="side for --resize short_side (default: the protocol's height, 240 / 480 as glue-factory)",
    )  # fmt: skip
    parser.add_argument("--split", choices=SPLITS, default="all")
    parser.add_argument("--max-sequences", type=int, help="only the first N sequences (quick checks)")
    parser.add_argument("--device", default="auto", help="SuperPoint device: auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch-size", type=int, help="images per SuperPoint call (default 16 on CUDA, 1 on CPU)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads for reading and OpenCV")
    parser.add_argument(
        "--threads", type=int,
        help="torch CPU threads (default: torch's); 1 is fastest on a CPU shared with other jobs",
    )  # fmt: skip
    parser.add_argument("--detection-threshold", type=float,
                        help="SuperPoint threshold (default: the preset's: the weights' for project, 0.001 for reference)")
    parser.add_argument(
        "--ransac-orders", type=int, default=1,
        help="homography correctness as the mean over this many orders of the matches (RANSAC's samples depend "
        "on it; default 1, the reference's single run); 20 steadies a small set like Oxford's 45 pairs",
    )  # fmt: skip
    parser.add_argument("--recompute", action="store_true", help="ignore cached predictions")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--match-pictures", type=int, default=2, help="pairs drawn with their matches (2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ransac_orders < 1:
        parser.error(f"--ransac-orders must be at least 1, got {args.ransac_orders}")
    unknown = [m for m in args.methods.split(",") if m.strip() and m.strip() not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {','.join(ALL_METHODS)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        result = run(
            args.dataset, args.output, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
            protocol=args.protocol, preset=args.preset, weights=args.weights or ["default"], cache=args.cache,
            resize=args.resize, short_side=args.short_side, split=args.split, max_sequences=args.max_sequences,
            device=args.device, batch_size=args.batch_size, workers=args.workers, threads=args.threads,
            detection_threshold=args.detection_threshold, ransac_orders=args.ransac_orders,
            recompute=args.recompute, plots=not args.no_plots, match_pictures=args.match_pictures,
            command="python -m superpoint_training.evaluate " + " ".join(shlex.quote(a) for a in argv),
        )  # fmt: skip
    except (HPatchesError, WeightsError) as error:
        parser.error(str(error))
    print(f"wrote {Path(args.output) / 'report.md'} in {time.perf_counter() - start:.1f} s (preset {args.preset})")
    for protocol, per_method in result.aggregates.items():
        metric = "repeatability" if protocol == "detector" else "correct_e3"
        for method, values in per_method.items():
            v = values[metric]
            print(f"  {protocol:10s} {method:24s} {metric}: illumination {format_value(v['illumination'])}, "
                  f"viewpoint {format_value(v['viewpoint'])}, all {format_value(v['all'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
