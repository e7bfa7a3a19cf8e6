"""Train the learned sub-pixel refinement (``subpixel="learned"``) with the network frozen, on pairs
of photo crops and their known warps; writes the weights file with the refinement added.

How it is trained and why: :mod:`superpoint_training.training.refinement`. Measure the result with
``python benchmarks/bench_localisation.py --weights OUTPUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .common.cli import command_parser
from .model.extractor import Extractor
from .model.loading import attach_refinement
from .model.refinement import SubpixelRefinement
from .training.refinement import PairSet, collect_pairs, list_photos, summary, train


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.train_refinement", __doc__.split("\n\n")[0],
        ["OMP_NUM_THREADS=2 nice -n 10 python -m superpoint_training.train_refinement --keep-best "
         "--photos ../shared/data/photos --output experiments/refinement/superpoint_ros_learned.pth"],
    )
    parser.add_argument("--photos", type=Path, required=True, help="folder of photos (searched recursively)")
    parser.add_argument("--weights", default="default", help="project checkpoint whose network is frozen")
    parser.add_argument("--output", type=Path, required=True, help="weights file to write (network + refinement)")
    parser.add_argument("--crops", type=int, default=10, help="crops (pairs) per photo")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--match-radius", type=float, default=2.0, help="px: pairs farther apart are not matches")
    parser.add_argument("--radius", type=int, default=3, help="half side of the score window")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--image-radius", type=int, default=7,
                        help="half side of an image window as a further input (0: the score map only)")
    parser.add_argument("--max-shift", type=float, default=1.0, help="px: the largest correction per axis")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--keep-best", action="store_true",
                        help="keep the parameters of the best held-out median (checked every 250 steps)")
    parser.add_argument("--pairs-cache", type=Path, default=None,
                        help="save the collected pairs here, or read them if the file exists (same photos, "
                             "weights, crops, size and windows)")
    parser.add_argument("--val-every", type=int, default=10, help="every N-th photo is held out")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    photos = list_photos(args.photos)
    if len(photos) < 2:
        print(f"error: fewer than 2 photos under {args.photos}", file=sys.stderr)
        return 2
    held_out = photos[:: max(2, args.val_every)]
    training = [p for p in photos if p not in held_out]
    try:
        extractor = Extractor(args.weights, device="cpu", backend="torch", precision="fp32", warmup=False,
                              subpixel="none", scales=(1.0,), max_keypoints=args.max_keypoints)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    refinement = SubpixelRefinement(args.radius, args.hidden, args.max_shift, args.image_radius)
    started = time.perf_counter()
    size = tuple(args.size)
    if args.pairs_cache is not None and args.pairs_cache.exists():
        train_pairs, val_pairs = (PairSet(**d) for d in torch.load(args.pairs_cache, weights_only=True))
    else:
        train_pairs = collect_pairs(extractor, training, refinement, args.crops, size, args.match_radius, args.seed)
        val_pairs = collect_pairs(extractor, held_out, refinement, args.crops, size, args.match_radius, args.seed + 1)
        if args.pairs_cache is not None:
            args.pairs_cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save([vars(train_pairs), vars(val_pairs)], args.pairs_cache)
    collected = time.perf_counter() - started
    before = summary(refinement, val_pairs)
    train(refinement, train_pairs, args.steps, args.batch_size, args.lr, args.seed, args.weight_decay,
          val_pairs if args.keep_best else None)
    report = {"photos_train": len(training), "photos_held_out": len(held_out),
              "collect_s": round(collected, 1), "train_s": round(time.perf_counter() - started - collected, 1),
              "train": summary(refinement, train_pairs), "held_out_before": before,
              "held_out": summary(refinement, val_pairs), "settings": {k: str(v) for k, v in vars(args).items()}}
    attach_refinement(args.weights, refinement, args.output, metadata=report)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
