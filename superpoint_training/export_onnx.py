"""Export SuperPoint with its post-processing to ONNX, in fixed-K mode.

The graph is the Extractor's own device function
(:class:`~superpoint_training.model.inference.SuperPointPipeline`: the network on the whole image, then
the post-processing with ``fixed_keypoints=True``), traced at one image size. Input and outputs:

    image        (B, 1, H, W) float32 gray in [0, 1]     (B fixed, or dynamic with --batch dynamic)
    keypoints    (B, K, 2) float32 (x, y) pixels, sorted by descending score
    scores       (B, K) float32
    descriptors  (B, K, D) float32, L2-normalised
    valid        (B, K) bool: score above the threshold (valid entries come first)

H and W need not be multiples of 8 (as in the Extractor, keypoints come from the first
8*floor(H/8) rows and 8*floor(W/8) columns). The detection settings
and the weights description are stored in the model's metadata. After the export the model is
checked with ONNX Runtime (when installed) against the Extractor on a real photo.

Examples::

    python -m superpoint_training.export_onnx --weights superpoint_v6_from_tf --output superpoint.onnx
    python -m superpoint_training.export_onnx --weights my.pth --output sp_240x320.onnx \\
        --height 240 --width 320 --max-keypoints 512 --batch dynamic
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .common.cli import add_detection_arguments, command_parser, docstring_examples, flag
from .model.loading import WeightsError
from .model.onnx_graph import compare_with_extractor, export_onnx, make_extractor, run_onnx, sample_photo


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.export_onnx",
        "Export SuperPoint and its fixed-K post-processing (keypoints, scores, descriptors, valid) "
        "to ONNX, then check it with ONNX Runtime against the Extractor.",
        docstring_examples(__doc__),
    )
    parser.add_argument("--weights", default="default", help="weights file or name (default: %(default)s)")
    parser.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    parser.add_argument("--height", type=int, default=480, help="input image height (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640, help="input image width (default: %(default)s)")
    parser.add_argument(*flag("max-keypoints"), type=int, default=1024,
                        help="K, the fixed number of keypoints per image (default: %(default)s)")
    parser.add_argument("--batch", default="1", help="batch size, or 'dynamic' (default: %(default)s)")
    add_detection_arguments(parser)
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                        help="torch.export-based exporter (default) or the legacy TorchScript tracer")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    batch: int | str = args.batch
    try:
        if batch != "dynamic":
            try:
                batch = int(batch)
            except ValueError:
                raise ValueError(f"--batch must be an integer or 'dynamic', got {args.batch!r}") from None
        if not str(args.output).endswith(".onnx"):
            raise ValueError(f"--output should be a .onnx file, got {args.output}")
        extractor = make_extractor(args.weights, args.max_keypoints, detection_threshold=args.detection_threshold,
                                   nms_radius=args.nms_radius, remove_borders=args.remove_borders)
        print(f"exporting {extractor.weights_description}: {args.height}x{args.width}, K={args.max_keypoints}, "
              f"batch {batch}, {extractor.config}")
        start = time.perf_counter()
        path = export_onnx(extractor, args.output, args.height, args.width, batch, args.opset, args.exporter)
    except (OSError, ValueError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: skipped the check (pip install onnxruntime)")
        return 0
    images = sample_photo(args.height, args.width)
    if batch != "dynamic" and int(batch) > 1:
        images = np.repeat(images, int(batch), axis=0)
    stats = compare_with_extractor(run_onnx(path, images), extractor, images)
    ok = stats["unmatched"] == 0 and stats["max_score_diff"] < 1e-4 and stats["max_descriptor_diff"] < 1e-3
    print(f"ONNX Runtime vs Extractor on a real photo: {stats['valid']} keypoints, {stats['unmatched']} unmatched, "
          f"max score diff {stats['max_score_diff']:.1e}, max descriptor diff {stats['max_descriptor_diff']:.1e}: "
          + ("OK" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
