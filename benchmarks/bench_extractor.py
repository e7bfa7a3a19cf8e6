"""Benchmark the Extractor: ms per frame from a host uint8 image to host keypoints and descriptors.

For each device (CPU, CUDA when present), backend (torch; on the CPU also onnxruntime and openvino
when installed), precision (fp32, fp16, bf16; each backend the ones it runs), image size and batch
size, it times :class:`superpoint_training.Extractor` against eager torch fp32 in the same run (the paths
timed in turns, one run of each per round, so that other load falls on all alike), with
the keypoint agreement beside each time, and the obvious baseline: a
straightforward eager PyTorch pipeline written below (model forward, softmax, reshape, plain 2-D
max-pool NMS, a per-image loop with nonzero / top-k / grid_sample, ``.cpu()``), and prints the
ratio. For every path but torch fp32 it also reports how many of the torch fp32 keypoints come out
at the same pixel and the median and 1st percentile of the cosine similarity of their descriptors
(the bounds that ``auto`` requires: >= 95 %, >= 0.999, >= 0.99). The row ``auto`` marks the path
that backend/precision ``auto`` picks on this machine. The input is a real photo (scikit-image's
CC0 astronaut) resized to each size, gray uint8 (``--rgb``: RGB).

Output: a Markdown table (with device, date, command and the load average) on stdout, and with
``--json`` the same rows in a file. This is a benchmark script, not a timed test.

Examples::

    python benchmarks/bench_extractor.py                                   # everything this machine has
    python benchmarks/bench_extractor.py --devices cpu --sizes 480x640 --batches 1 \\
        --weights superpoint_ros --repeats 10                              # BENCHMARKS.md's CPU table
    python benchmarks/bench_extractor.py --devices cpu --backends torch --precisions fp32,bf16
    python benchmarks/bench_extractor.py --devices cuda --json bench_h100.json --breakdown
    python benchmarks/bench_extractor.py --devices cpu --sizes 480x640 --batches 1 --backends openvino \
        --precisions bf16 --weights superpoint_ros --subpixel gaussian,corner   # a refinement's cost, side by side
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from superpoint_training import Extractor, load_superpoint  # noqa: E402
from superpoint_training.common.cli import add_scales_argument  # noqa: E402
from superpoint_training.common.machine import describe_machine, machine_record  # noqa: E402
from superpoint_training.model.backends import (  # noqa: E402
    BACKEND_PRECISIONS,
    BACKENDS,
    choose,
    is_available,
    pair_same_points,
)
from superpoint_training.model.extractor import PRECISIONS  # noqa: E402
from superpoint_training.model.inference import GRAY_WEIGHTS  # noqa: E402
from superpoint_training.model.keypoints import SUBPIXEL  # noqa: E402
from superpoint_training.model.network import STRIDE  # noqa: E402

DEFAULT_SIZES = "240x320,480x640,720x1280"


# ------------------------------------------------------------------------------------------------
# The baseline: what one writes first (SuperGlue-style), eager, per-image loop after the network.
# ------------------------------------------------------------------------------------------------
def _baseline_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    def max_pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    max_mask = scores == max_pool(scores)
    for _ in range(2):
        supp_mask = max_pool(max_mask.float()) > 0
        supp_scores = torch.where(supp_mask, zeros, scores)
        new_max_mask = supp_scores == max_pool(supp_scores)
        max_mask = max_mask | (new_max_mask & (~supp_mask))
    return torch.where(max_mask, scores, zeros)


class BaselinePipeline:
    """Straightforward eager pipeline on the same network and settings as the Extractor."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, config):
        self.model, self.device, self.dtype, self.config = model, device, dtype, config
        self.gray = torch.tensor(GRAY_WEIGHTS, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        cfg = self.config
        x = torch.from_numpy(np.stack(images)).to(self.device).float() / 255.0
        x = x[:, None] if x.ndim == 3 else (x.permute(0, 3, 1, 2) * self.gray).sum(1, keepdim=True)
        logits, dense = self.model(x.to(self.dtype))
        scores = torch.softmax(logits.float(), 1)[:, :-1]
        b, _, hc, wc = scores.shape
        scores = scores.permute(0, 2, 3, 1).reshape(b, hc, wc, STRIDE, STRIDE)
        scores = scores.permute(0, 1, 3, 2, 4).reshape(b, 1, hc * STRIDE, wc * STRIDE)
        scores = _baseline_nms(scores, cfg.nms_radius)[:, 0]
        dense = F.normalize(dense.float(), p=2, dim=1)
        height, width = scores.shape[-2:]
        border = cfg.remove_borders
        out = []
        for i in range(b):
            yx = torch.nonzero(scores[i] > cfg.detection_threshold)
            values = scores[i][yx[:, 0], yx[:, 1]]
            keep = (yx[:, 0] >= border) & (yx[:, 0] < height - border) & (yx[:, 1] >= border) & (yx[:, 1] < width - border)
            yx, values = yx[keep], values[keep]
            if cfg.max_keypoints is not None and len(values) > cfg.max_keypoints:
                values, index = torch.topk(values, cfg.max_keypoints)
                yx = yx[index]
            keypoints = yx.flip(1).float()
            grid = (keypoints + 0.5) / keypoints.new_tensor([width, height]) * 2 - 1
            desc = F.grid_sample(dense[i : i + 1], grid.view(1, 1, -1, 2), mode="bilinear", align_corners=False)
            desc = F.normalize(desc.reshape(dense.shape[1], -1), p=2, dim=0).t()
            out.append((keypoints.cpu().numpy(), values.cpu().numpy(), desc.cpu().numpy()))
        return out


# ------------------------------------------------------------------------------------------------
def photo(height: int, width: int, rgb: bool) -> np.ndarray:
    import cv2

    try:
        from skimage import data

        image = data.astronaut()
    except ImportError:  # no scikit-image: smooth noise still gives keypoints
        rng = np.random.default_rng(0)
        image = cv2.GaussianBlur(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), (0, 0), 3)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image if rgb else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def timed(fn: Callable[[], object], sync: Callable[[], None], repeats: int, max_seconds: float,
          warmup: int, clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, float], object]:
    """Median and minimum seconds of ``fn`` over up to ``repeats`` runs (at least 2) within ``max_seconds``."""
    result = None
    for _ in range(warmup):
        result = fn()
        sync()
    times: list[float] = []
    while len(times) < max(repeats, 1) and (len(times) < 2 or sum(times) < max_seconds):
        start = clock()
        result = fn()
        sync()
        times.append(clock() - start)
    return {"median": statistics.median(times), "min": min(times), "runs": len(times)}, result


def interleaved(fns: list[Callable[[], object]], sync: Callable[[], None], repeats: int, max_seconds: float,
                clock: Callable[[], float] = time.perf_counter) -> list[tuple[dict[str, float], object]]:
    """Time several functions in turns (one run of each per round), so that load that comes and goes
    on a shared machine falls on all of them alike; up to ``repeats`` rounds (at least 2) within
    ``max_seconds`` per function. Returns (median/min/runs, last result) per function."""
    times: list[list[float]] = [[] for _ in fns]
    results: list[object] = [None] * len(fns)
    rounds = 0
    while fns and rounds < max(repeats, 1) and (rounds < 2 or sum(map(sum, times)) < max_seconds * len(fns)):
        for i, fn in enumerate(fns):
            start = clock()
            results[i] = fn()
            sync()
            times[i].append(clock() - start)
        rounds += 1
    return [({"median": statistics.median(t), "min": min(t), "runs": len(t)}, r)
            for t, r in zip(times, results, strict=True)]


def agreement(low: list, high: list) -> tuple[float, float, float]:
    """Fraction of the fp32 keypoints found at the same pixel, median and 1st percentile of the
    descriptor cosine over those."""
    shared, total, cosines = 0, 0, []
    for (kp_l, desc_l), (kp_h, desc_h) in zip(low, high, strict=True):
        pairs, _ = pair_same_points(kp_l, kp_h, tolerance=0.999)  # the same maximum (sub-pixel may differ)
        total += len(kp_h)
        shared += len(pairs)
        if len(pairs) and desc_h.size:
            a, b = pairs.T
            cosines.append(np.sum(desc_l[a].astype(np.float64) * desc_h[b], axis=1))
    cos = np.concatenate(cosines) if cosines else np.full(1, np.nan)
    return (shared / total if total else float("nan")), float(np.median(cos)), float(np.percentile(cos, 1))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU (torch: {torch.backends.cpu.get_cpu_capability()}), torch threads {torch.get_num_threads()}"


def memory_needed_gb(batch: int, height: int, width: int, precision: str) -> float:
    """Rough peak activation memory: a few 64-channel full-resolution maps."""
    return 3 * batch * 64 * height * width * torch.finfo(PRECISIONS[precision]).bits / 8 / 1e9


def memory_available_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 1e9
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


def load_weights(name: str):
    if name == "random":  # random weights whose scores look like a trained net's (as in the tests)
        sys.path.insert(0, str(REPO / "test"))
        from helpers import random_state_dict

        return load_superpoint(random_state_dict("v6", seed=0))
    return load_superpoint(name)


def parse_list(text: str, kind=str) -> list:
    return [kind(item) for item in text.split(",") if item]


def parse_size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def run(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    for name in parse_list(args.devices):
        if name.startswith("cuda") and not torch.cuda.is_available():
            print(f"# skipping {name}: no CUDA device", file=sys.stderr)
            continue
        devices.append(torch.device(name))
    sizes = [parse_size(s) for s in parse_list(args.sizes)]
    batches = parse_list(args.batches, int)
    precisions = parse_list(args.precisions)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise SystemExit(f"unknown precisions {sorted(unknown)} (choose from {list(PRECISIONS)})")
    backends = parse_list(args.backends)
    if set(backends) - set(BACKENDS):
        raise SystemExit(f"unknown backends {sorted(set(backends) - set(BACKENDS))} (choose from {list(BACKENDS)})")
    for backend in backends:
        if not is_available(backend):
            print(f"# skipping backend {backend}: not installed (pip install .[cpu])", file=sys.stderr)
    backends = [b for b in backends if is_available(b)]
    subpixels = parse_list(args.subpixel) if args.subpixel else [None]  # None: the weights' own
    if set(subpixels) - {None, *SUBPIXEL}:
        raise SystemExit(f"unknown subpixel modes {sorted(set(subpixels) - set(SUBPIXEL))} (choose from {list(SUBPIXEL)})")
    loaded = load_weights(args.weights)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "torch": torch.__version__,
        "machine": describe_machine(str(devices[-1])),  # the GPU too when a CUDA device is benchmarked
        "machine_record": machine_record(str(devices[-1])),
        "weights": "random trained-looking v6 weights (test/helpers.py)" if args.weights == "random"
        else loaded.description,
        "max_keypoints": args.max_keypoints,
        "subpixel": subpixels,
        "scales": args.scales,
        "input": "RGB uint8" if args.rgb else "gray uint8",
        "devices": {str(d): device_name(d) for d in devices},
        "auto": {str(d): "/".join(choose(d)) for d in devices},
        "stat": args.stat,
        "clock": args.clock,
        "load_start": os.getloadavg()[0],
    }
    rows: list[dict] = []
    for device in devices:
        sync = (lambda d=device: torch.cuda.synchronize(d)) if device.type == "cuda" else (lambda: None)
        clock = time.process_time if args.clock == "cpu" and device.type == "cpu" else time.perf_counter
        extractors: dict[tuple[str, str, str | None], Extractor] = {}
        paths = [("torch", "fp32", m) for m in subpixels]  # first: the references, one per refinement
        paths += [(b, p, m) for b in backends for p in precisions for m in subpixels
                  if p in BACKEND_PRECISIONS[b] and (b, p, m) not in paths and (b == "torch" or device.type == "cpu")]
        auto = choose(device)
        for (height, width) in sizes:
            for batch in batches:
                images = [photo(height, width, args.rgb)] * batch
                fp32: dict = {}  # subpixel mode -> (result, all keypoints, seconds) of torch fp32
                ready = []  # (row, wanted, extractor, run): every path set up and warmed first, then timed in turns
                for backend, precision, subpixel in paths:
                    row = {"device": str(device), "size": f"{height}x{width}", "batch": batch, "backend": backend,
                           "precision": precision, "auto": "auto" if (backend, precision) == auto else ""}
                    if args.subpixel:
                        row["subpixel"] = subpixel
                    wanted = backend in backends and precision in precisions
                    needed = memory_needed_gb(batch, height, width, precision)
                    try:
                        if needed > 0.6 * memory_available_gb(device):
                            raise MemoryError(f"needs about {needed:.1f} GB")
                        if (backend, precision, subpixel) not in extractors:
                            # each path casts or compiles its own copy of the network
                            extractors[backend, precision, subpixel] = Extractor(
                                copy.deepcopy(loaded), device, precision=precision, backend=backend,
                                max_keypoints=args.max_keypoints, subpixel=subpixel, scales=args.scales,
                                warmup=False)
                        extractor = extractors[backend, precision, subpixel]

                        def ours(extractor=extractor, images=images):
                            return [f.numpy() for f in extractor(images)]

                        for _ in range(args.warmup):
                            ours()
                        sync()
                    except (RuntimeError, NotImplementedError, MemoryError) as error:  # e.g. fp16 kernels missing
                        row["skipped"] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
                        if wanted:
                            rows.append(row)
                        continue
                    ready.append((row, wanted, extractor, ours))
                timings = interleaved([run for *_, run in ready], sync, args.repeats, args.max_seconds, clock)
                for (row, wanted, extractor, _), (stats, result) in zip(ready, timings, strict=True):
                    backend, precision = row["backend"], row["precision"]
                    seconds = stats[args.stat]
                    summary = [(f.keypoints, f.descriptors) for f in result]
                    everything = all_keypoints(extractor, images) if len(paths) > 1 else None
                    mode = row.get("subpixel")
                    reference = (backend, precision) == ("torch", "fp32")
                    if reference:
                        fp32[mode] = (summary, everything, seconds)
                    if not wanted:
                        continue
                    row.update(ms_per_frame=1000 * seconds / batch, runs=stats["runs"],
                               ms_per_frame_median=1000 * stats["median"] / batch,
                               ms_per_frame_min=1000 * stats["min"] / batch,
                               keypoints=float(np.mean([len(f) for f in result])))
                    if mode in fp32 and not reference:  # against torch fp32 with the same refinement
                        fp32_result, fp32_all, fp32_seconds = fp32[mode]
                        row["kp_agreement"], row["desc_cosine"], row["desc_cosine_p1"] = agreement(summary, fp32_result)
                        row["kp_agreement_all"], _, _ = agreement(everything, fp32_all)
                        row["vs_torch_fp32"] = fp32_seconds / seconds
                    if args.breakdown:
                        seconds_net = network_time(extractor, images, sync, args, clock)
                        row["network_ms_per_frame"] = 1000 * seconds_net / batch
                    if not args.no_baseline and backend == "torch":
                        baseline = BaselinePipeline(extractor.model, device, extractor.dtype, extractor.config)
                        b_stats, b_result = timed(lambda b=baseline, im=images: b(im), sync, args.repeats,
                                                  args.max_seconds, min(args.warmup, 1), clock)
                        b_seconds = b_stats[args.stat]
                        row["baseline_ms_per_frame"] = 1000 * b_seconds / batch
                        row["speedup"] = b_seconds / seconds
                        row["baseline_kp_agreement"], _, _ = agreement([(r[0], r[2]) for r in b_result], summary)
                    row["load"] = os.getloadavg()[0]
                    rows.append(row)
                    print(f"# {format_row(row)}", file=sys.stderr, flush=True)
    meta["load_end"] = os.getloadavg()[0]
    return meta, rows


def all_keypoints(extractor: Extractor, images: list[np.ndarray]) -> list:
    """Every keypoint above the threshold (no top-k), to compare precisions without the top-k cut-off,
    which reorders near-equal scores."""
    k = extractor.config.max_keypoints
    extractor.configure(max_keypoints=None)
    try:
        return [(f.keypoints, f.descriptors) for f in (f.numpy() for f in extractor(images))]
    finally:
        extractor.configure(max_keypoints=k)


def network_time(extractor: Extractor, images: list[np.ndarray], sync, args, clock) -> float:
    """Seconds of the network alone on an uploaded batch (the rest is upload, post-processing, download)."""
    batch = extractor.upload(images)

    def forward():
        with torch.inference_mode():
            return extractor.pipeline.run_network(batch)

    return timed(forward, sync, args.repeats, args.max_seconds, args.warmup, clock)[0][args.stat]


COLUMNS = [
    ("device", "device", "{}"),
    ("size", "size", "{}"),
    ("batch", "batch", "{}"),
    ("backend", "backend", "{}"),
    ("precision", "precision", "{}"),
    ("auto", "auto picks", "{}"),
    ("subpixel", "subpixel", "{}"),
    ("ms_per_frame", "Extractor ms/frame", "{:.2f}"),
    ("vs_torch_fp32", "vs torch fp32", "{:.2f}x"),
    ("network_ms_per_frame", "network only ms/frame", "{:.2f}"),
    ("baseline_ms_per_frame", "baseline ms/frame", "{:.2f}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("keypoints", "keypoints/frame", "{:.0f}"),
    ("kp_agreement", "kp equal to torch fp32", "{:.1%}"),
    ("kp_agreement_all", "same, all above threshold", "{:.1%}"),
    ("desc_cosine", "desc cosine median", "{:.5f}"),
    ("desc_cosine_p1", "desc cosine 1st pct", "{:.4f}"),
    ("load", "load avg", "{:.1f}"),
]


def format_row(row: dict) -> str:
    if "skipped" in row:
        return (f"{row['device']} {row['size']} b{row['batch']} {row['backend']} {row['precision']}: "
                f"skipped ({row['skipped']})")
    parts = [fmt.format(row[key]) for key, _, fmt in COLUMNS if key in row]
    return " | ".join(parts)


def markdown(meta: dict, rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = [
        f"Date: {meta['date']}  ",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        *[f"Device `{name}`: {desc}; auto picks {meta['auto'][name]}  " for name, desc in meta["devices"].items()],
        f"torch {meta['torch']}; weights: {meta['weights']}; max_keypoints {meta['max_keypoints']}; "
        f"input {meta['input']}; load average (1 min) {meta['load_start']:.1f} at start, {meta['load_end']:.1f} "
        "at end  ",
        f"Times: {meta['stat']} {'process CPU time' if meta['clock'] == 'cpu' else 'wall-clock'} ms per frame from host uint8 images to host keypoints/scores/descriptors; baseline = "
        "straightforward eager pipeline (per-image nonzero/top-k/grid_sample).",
        "",
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            if key in row:
                cells.append(fmt.format(row[key]))
            elif "skipped" in row and key == "ms_per_frame":
                cells.append(f"skipped: {row['skipped']}")
            else:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the Extractor against a straightforward eager PyTorch pipeline.",
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--devices", default=default_devices, help="comma-separated (default: %(default)s)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="HxW list (default: %(default)s)")
    parser.add_argument("--batches", default="1,16", help="batch sizes (default: %(default)s)")
    parser.add_argument("--precisions", default="fp32,fp16,bf16", help="(default: %(default)s)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="torch, onnxruntime, openvino; the last two on the CPU only (default: %(default)s)")
    parser.add_argument("--weights", default="random",
                        help="weights name or file; 'random': trained-looking random v6 weights (default)")
    parser.add_argument("--max_keypoints", "--max-keypoints", type=int, default=1024,
                        help="per image (default: %(default)s)")
    parser.add_argument("--subpixel", default=None,
                        help="sub-pixel refinement, or a comma list of them timed side by side in turns, e.g. "
                        "gaussian,corner (default: the weights')")
    add_scales_argument(parser)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per configuration at most")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="stop repeating after this long (>= 2 runs)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default: %(default)s)")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="statistic of the timed runs to report; 'min' resists other load on shared machines")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="'cpu': process CPU time on CPU devices, with --threads 1 a measure of the work that other "
                        "load on a shared machine hardly disturbs (CUDA rows always use the wall clock)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--rgb", action="store_true", help="RGB input instead of gray")
    parser.add_argument("--no-baseline", action="store_true", help="skip the eager baseline")
    parser.add_argument("--breakdown", action="store_true", help="also time the network alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and metadata here")
    args = parser.parse_args(argv)
    meta, rows = run(args)
    print(markdown(meta, rows))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
