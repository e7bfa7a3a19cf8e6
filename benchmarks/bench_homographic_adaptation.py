"""Homographic Adaptation export rate: images per second at 240x320 with 100 homographies.

Times :class:`superpoint_training.training.homographic_adaptation.HomographicAdaptation` plus keypoint
selection on batches of real photos (scikit-image's, resized as the export does), and the detector
network alone on the same number of warped images, so that the report shows how much of the time
is the network and how much the warping and aggregation. Reading and writing files are not timed
(the export overlaps them with the device work in worker processes and threads).

    python benchmarks/bench_homographic_adaptation.py                        # CPU, few images
    python benchmarks/bench_homographic_adaptation.py --device cuda --precision fp16 \\
        --batch_size 32 --chunk_size 800 --images 512

Weights: MagicPoint with random weights by default (same cost as trained ones); --weights for others.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np
import torch

from superpoint_training.common.machine import describe_machine
from superpoint_training.data.images import resize_crop, skimage_photos
from superpoint_training.model.extractor import Extractor
from superpoint_training.model.network import ModelConfig, SuperPoint
from superpoint_training.training.homographic_adaptation import HomographicAdaptation


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    return f"{describe_machine(str(device))}; {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--num", type=int, default=100, help="homographies per image (identity included)")
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--batch_size", type=int, default=2, help="images per adaptation call")
    parser.add_argument("--chunk_size", type=int, default=0, help="warped images per network call (0: auto)")
    parser.add_argument("--images", type=int, default=4, help="images timed (after one warm-up batch)")
    parser.add_argument("--aggregation", default="sum", choices=["sum", "max"])
    parser.add_argument("--weights", default=None, help="weights name or file (default: random MagicPoint)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        model = SuperPoint(ModelConfig(variant="v6", descriptor_dim=0))
        weights = {"format": "superpoint_ros", "model_config": model.config.to_dict(), "model": model.state_dict()}
    extractor = Extractor(weights, device=args.device, precision=args.precision, warmup=False)
    device = extractor.device
    adaptation = HomographicAdaptation(
        extractor, {"num": args.num, "aggregation": args.aggregation}, chunk_size=args.chunk_size
    )
    photos = [resize_crop(np.asarray(rgb.mean(-1), np.uint8), args.size) for _, rgb in skimage_photos()]
    batches = []
    for start in range(0, args.images + args.batch_size, args.batch_size):
        chosen = [photos[(start + i) % len(photos)] for i in range(args.batch_size)]
        batches.append(torch.from_numpy(np.stack(chosen)).float().div(255)[:, None].to(device))
    generator = torch.Generator().manual_seed(0)

    def run(batch):
        out = adaptation(batch, generator=generator)
        points = adaptation.select(out["prob"], 0.015, 4, 0, 0)
        return points["valid"].sum(1).tolist()  # the export's host sync

    run(batches[0])  # warm-up (cuDNN autotuning, allocations)
    sync(device)
    count, start = 0, time.perf_counter()
    for batch in batches[1:]:
        run(batch)
        count += batch.shape[0]
        if count >= args.images:
            break
    sync(device)
    elapsed = time.perf_counter() - start
    rate = count / elapsed

    chunk = adaptation.chunk_size or (256 if device.type == "cuda" else 8)
    warped = batches[0].repeat(chunk // batches[0].shape[0] + 1, 1, 1, 1)[:chunk].contiguous()
    extractor.dense_scores(warped)
    sync(device)
    total = count * args.num
    calls = max(1, total // chunk)
    start = time.perf_counter()
    for _ in range(calls):
        extractor.dense_scores(warped)
    sync(device)
    network = (time.perf_counter() - start) / (calls * chunk) * total

    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    print(f"machine: {machine(device)}; {when}")
    print(f"network: {extractor.backend} backend, {extractor.precision}")
    print(f"command: python benchmarks/bench_homographic_adaptation.py {' '.join(argv or sys.argv[1:])}")
    print(f"{count} images of {args.size[0]}x{args.size[1]}, {args.num} homographies, batch {args.batch_size}, "
          f"chunk {chunk}, {args.precision}, aggregation {args.aggregation}")
    print(f"homographic adaptation: {rate:.3f} images/s ({elapsed / count * 1000:.0f} ms per image, "
          f"{rate * args.num:.0f} warped images/s)")
    print(f"network alone on the same warped images: {network / elapsed * 100:.0f}% of that time "
          f"({total / network:.0f} warped images/s)")
    if rate > 0:
        print(f"MS-COCO train2014 (82,783 images) at this rate: {82783 / rate / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
