"""Benchmark of the bag tool: frames per second for raw and JPEG 640x480 images, CPU and CUDA.

Writes its own bag (mcap) of 640x480 frames of a real photo (scikit-image's astronaut, shifted per
frame) on two topics, ``/camera/image_raw`` (bgr8) and ``/camera/image_raw/compressed`` (JPEG,
quality 95), then runs :func:`superpoint_ros.extract_bag.extract_bag` on each topic and device and
reports frames per second (all columns): end to end (read, decode, extract, serialise, write),
reading and decoding alone (no network), and the Extractor alone on frames already in memory; the
end-to-end rate is bounded by the smaller of the other two. With ``--batch-sizes``, it runs the bag
tool as its own process per batch size on the raw topic instead and reports frames per second and
the process's peak memory (resident set), which is what chooses the default batch per device.

Examples::

    python benchmarks/bench_bag.py                       # CPU, and CUDA when available
    python benchmarks/bench_bag.py --frames 2000 --devices cuda --precision fp16 --batch-size 64
    python benchmarks/bench_bag.py --frames 32 --devices cpu --batch-sizes 1 16   # memory per batch
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from superpoint_ros.bag_reader import MessagePump, open_bag
from superpoint_ros.extract_bag import extract_bag
from superpoint_training.common.machine import describe_machine
from superpoint_training.model.extractor import Extractor
from superpoint_training.model.loading import WeightsError, load_superpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from bag_files import BagImage, write_image_bag  # noqa: E402 - the tests' bag writer

TOPICS = {"raw (bgr8)": "/camera/image_raw", "JPEG": "/camera/image_raw/compressed"}


def make_bag(path: Path, frames: int) -> None:
    from skimage import data

    photo = cv2.resize(data.astronaut(), (680, 520), interpolation=cv2.INTER_AREA)
    images = []
    for i in range(frames):
        dx, dy = (3 * i) % 40, (2 * i) % 40
        rgb = np.ascontiguousarray(photo[dy : dy + 480, dx : dx + 640])
        time_ns = 1_700_000_000_000_000_000 + i * 33_333_333
        images.append(BagImage(TOPICS["raw (bgr8)"], time_ns, rgb, "bgr8"))
        images.append(BagImage(TOPICS["JPEG"], time_ns + 1, rgb, "jpeg"))
    write_image_bag(path, "mcap", images)


def decode_rate(bag: Path, topic: str, workers: int) -> float:
    """Frames per second of reading and decoding alone."""
    reader, _ = open_bag([bag])
    try:
        start = time.perf_counter()
        with MessagePump(reader, lambda c: c.topic == topic, workers=workers) as pump:
            count = sum(1 for _ in pump)
        return count / (time.perf_counter() - start)
    finally:
        reader.close()


def extractor_rate(extractor: Extractor, batch: int, frames: int) -> float:
    """Frames per second of the Extractor alone on decoded 640x480 RGB frames already in memory."""
    from skimage import data

    image = cv2.resize(data.astronaut(), (640, 480), interpolation=cv2.INTER_AREA)
    images = [image] * batch
    runs = max(1, frames // batch)
    start = time.perf_counter()
    for _ in range(runs):
        for features in extractor.extract_batch(extractor.upload(images), as_list=True):
            features.numpy()
    return runs * batch / (time.perf_counter() - start)


def batch_memory(bag: Path, topic: str, device: str, batch: int, args: argparse.Namespace) -> tuple[float, float]:
    """(frames/s, peak resident memory in GB) of the bag tool run as its own process with ``batch``."""
    out = bag.parent / f"memory_{batch}"
    log = bag.parent / f"memory_{batch}.txt"
    command = [sys.executable, "-m", "superpoint_ros.extract_bag", str(bag), "--topics", topic, "--output", str(out),
               "--device", device, "--weights", args.weights, "--max-keypoints", str(args.max_keypoints),
               "--batch-size", str(batch), "-q"]
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    match = re.search(r"([\d.]+) frames/s", text)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{text}")
    shutil.rmtree(out, ignore_errors=True)
    return float(match.group(1)), usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="examples:" + __doc__.split("Examples::", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per topic (default: 48 on CPU only, 1000 with CUDA)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                        help="network precision on CUDA (the CPU always runs fp32)")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: min(8, CPU count))")
    parser.add_argument("--weights", default="default",
                        help="weights (default: %(default)s; 'untrained' when those are not installed: the speed "
                        "is the same, and its keypoint count saturates at --max-keypoints)")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="instead: frames/s and peak memory of the bag tool per batch size (raw topic)")
    args = parser.parse_args(argv)

    try:
        load_superpoint(args.weights)
    except WeightsError as error:
        print(f"note: {error}; timing with weights 'untrained'", file=sys.stderr)
        args.weights = "untrained"
    cuda = torch.cuda.is_available()
    devices = args.devices or (["cpu", "cuda"] if cuda else ["cpu"])
    frames = args.frames or (1000 if "cuda" in devices else 48)
    workers = args.workers or min(8, os.cpu_count() or 2)
    folder = Path(tempfile.mkdtemp(prefix="bench_bag_"))
    try:
        start = time.perf_counter()
        make_bag(folder / "bag", frames)
        print(f"wrote {frames} frames per topic (640x480) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        print(f"## bag tool benchmark, {datetime.date.today()}")
        print(f"machine: {describe_machine('cuda' if cuda else 'cpu')}; {torch.get_num_threads()} torch threads")
        print(f"command: python benchmarks/bench_bag.py {' '.join(argv if argv is not None else sys.argv[1:])}")
        print(f"{frames} frames per topic, weights {args.weights}, max {args.max_keypoints} keypoints, "
              f"{workers} decode threads\n")
        if args.batch_sizes:
            print("| images | device | batch | frames/s (end to end) | peak memory (process RSS) |")
            print("|---|---|---|---|---|")
            for device in devices:
                for batch in args.batch_sizes:
                    rate, peak = batch_memory(folder / "bag", TOPICS["raw (bgr8)"], device, batch, args)
                    print(f"| raw 640x480 | {device} | {batch} | {rate:.2f} | {peak:.2f} GB |", flush=True)
            return 0
        print("| images | device | backend, precision | batch | read + decode only | extractor only | end to end "
              "| end to end per CPU-second |")
        print("|---|---|---|---|---|---|---|---|")
        decode = {name: decode_rate(folder / "bag", topic, workers) for name, topic in TOPICS.items()}
        for device in devices:
            precision = args.precision if device.startswith("cuda") else "fp32"
            batch = args.batch_size or (64 if device.startswith("cuda") else 8)
            extractor = Extractor(args.weights, device, max_keypoints=args.max_keypoints, precision=precision,
                                  warmup=(480, 640))
            extractor.warmup((480, 640), batch_size=batch)
            alone = extractor_rate(extractor, batch, frames)
            for name, topic in TOPICS.items():
                out = folder / f"out_{device.replace(':', '_')}_{topic.replace('/', '_')}"
                cpu = time.process_time()
                summary = extract_bag([folder / "bag"], out, extractor, topics=[topic], batch_size=batch,
                                      workers=workers, progress=False)
                cpu = time.process_time() - cpu
                rate = summary.frames / summary.seconds
                print(f"| {name} | {device} | {extractor.backend}, {extractor.precision} | {batch} | {decode[name]:.0f} | {alone:.1f} | {rate:.1f} "
                      f"| {summary.frames / cpu:.2f} |")
                shutil.rmtree(out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
