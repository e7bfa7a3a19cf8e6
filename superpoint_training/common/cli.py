"""What every tool that extracts shares: the Extractor's command-line options (its keyword names,
with hyphenated aliases), the settings record written beside features, and batching by image size."""

from __future__ import annotations

import argparse
import dataclasses

from ..model.extractor import BACKEND_CHOICES, PRECISIONS, Extractor
from ..model.keypoints import DESCRIPTOR_SAMPLING, SUBPIXEL, no_limit, parse_scales


def add_backend_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add --backend and --precision (both ``auto`` by default: the fastest path that keeps the
    accuracy bounds on this machine)."""
    parser.add_argument("--backend", choices=list(BACKEND_CHOICES), default="auto",
                        help="network backend; auto: OpenVINO or ONNX Runtime on a CPU when installed "
                        "(pip install .[cpu]), torch on CUDA (default: %(default)s)")
    parser.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                        help="network precision; auto: bf16 on a CPU with native bf16 where it keeps the accuracy "
                        "bounds, else fp32 (default: %(default)s)")


def describe_path(extractor: Extractor) -> str:
    """``"cpu, openvino bf16"``: where and how the network runs, for the tools' reports."""
    return f"{extractor.device}, {extractor.backend} {extractor.precision}"


def add_scales_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add --scales (an image pyramid, parsed by :func:`~superpoint_training.model.keypoints.parse_scales`)."""
    parser.add_argument("--scales", type=parse_scales, default=None,
                        help="image pyramid, fractions of the image in (0, 1], e.g. 1 (single scale) or "
                        "1,0.71,0.5 (default: the weights')")


def add_extractor_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                            max_keypoints: int | None = None) -> None:
    """Add --weights, --device, --backend, --precision, --max_keypoints, --detection_threshold,
    --nms_radius, --remove_borders, --descriptor_sampling, --subpixel, --scales and --resize. ``max_keypoints``: the
    tool's default (None, -1 or 0: every point above the threshold)."""
    parser.add_argument("--weights", default="default", help="weights file or name (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    add_backend_arguments(parser)
    parser.add_argument("--max_keypoints", "--max-keypoints", type=int, default=max_keypoints,
                        help="keep the best N keypoints per image, -1 or 0 keeps all above the threshold "
                        "(default: %(default)s)")
    parser.add_argument("--detection_threshold", "--detection-threshold", type=float, default=None,
                        help="score threshold (default: the weights format's, 0.005)")
    parser.add_argument("--nms_radius", "--nms-radius", type=int, default=None,
                        help="max-pool NMS radius in pixels (default: the weights format's, 4)")
    parser.add_argument("--remove_borders", "--remove-borders", type=int, default=None,
                        help="drop keypoints this close to the edge (default: the weights format's, 4)")
    parser.add_argument("--descriptor_sampling", "--descriptor-sampling", choices=DESCRIPTOR_SAMPLING, default=None,
                        help="descriptor sampling convention (default: the weights format's)")
    parser.add_argument("--subpixel", choices=SUBPIXEL, default=None,
                        help="sub-pixel refinement of keypoints: gaussian, quadratic or none (default: the weights')")
    add_scales_argument(parser)
    parser.add_argument("--resize", type=int, default=None,
                        help="resize so that the longer side has this many pixels (keypoints stay in the "
                        "original image's coordinates)")


def extractor_from_args(args: argparse.Namespace, **overrides) -> Extractor:
    """An Extractor built from the options of :func:`add_extractor_arguments`."""
    options = dict(
        detection_threshold=args.detection_threshold,
        nms_radius=args.nms_radius,
        remove_borders=args.remove_borders,
        max_keypoints=no_limit(args.max_keypoints),
        descriptor_sampling=args.descriptor_sampling,
        subpixel=args.subpixel,
        scales=args.scales,
        precision=args.precision,
        backend=args.backend,
        resize=no_limit(args.resize),
    )
    options.update(overrides)
    return Extractor(args.weights, args.device, **options)


def extractor_settings(extractor: Extractor, **extra) -> dict:
    """The settings a tool records beside its features: detection options, resize, backend and
    precision, descriptor size, plus ``extra`` (e.g. the weights as given)."""
    return {
        **dataclasses.asdict(extractor.config),
        "resize": extractor.resize,
        "precision": extractor.precision,
        "backend": extractor.backend,
        "descriptor_dim": extractor.descriptor_dim,
        **extra,
    }
