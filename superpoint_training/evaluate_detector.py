"""Precision, recall, mAP and localisation error of detectors on held-out Synthetic Shapes images
(the data section of a training config).

    python -m superpoint_training.evaluate_detector config/magic-point_shapes_cpu.yaml --weights magicpoint_shapes

``--preset project`` (default) reads the settings from the config's ``validation`` section;
``--preset reference`` uses the reference's: detection threshold 0.001 (also where the curve
starts), the box NMS of size 4 with IoU 0.1, no border removal; the config's distance threshold.
"""

from __future__ import annotations

import argparse
import sys

import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from .common.cli import command_parser, flag
from .common.config import ConfigError
from .evaluation.presets import PRESETS, REFERENCE_DETECTOR_BOX, BoxNMSDetectorMetrics, evaluate_detector_with
from .model.extractor import resolve_device
from .model.loading import WeightsError, load_superpoint
from .training.detector_metrics import DetectorMetricsAccumulator
from .training.train_config import DATASETS, build_config


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.evaluate_detector",
        "Precision, recall, mAP and localisation error of detectors on Synthetic Shapes.",
        [
            "python -m superpoint_training.evaluate_detector config/magic-point_shapes_cpu.yaml --weights magicpoint_shapes untrained",
            "python -m superpoint_training.evaluate_detector config/magic-point_shapes.yaml --weights experiments/magic-point_synth/weights.pth --split validation",
        ],
    )
    parser.add_argument("config", help="training config whose data section names the images")
    parser.add_argument("--weights", nargs="+", default=["magicpoint_shapes"], help="weights files or names")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--device", default="auto")
    parser.add_argument(*flag("batch-size"), type=int, default=50)
    parser.add_argument("--output", default=None, help="also write the settings and figures to this YAML file")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="project",
                        help="project: the config's validation settings (default); reference: threshold 0.001, "
                        f"box NMS of size {REFERENCE_DETECTOR_BOX} with IoU 0.1, no border removal")
    return parser


def preset_settings(validation: dict, preset: str) -> tuple[dict, str]:
    """The metric settings of ``preset`` (the config's ``validation`` section for ``project``) and
    the NMS in words."""
    settings = {
        k: validation[k]
        for k in ("distance_threshold", "detection_threshold", "nms_radius", "remove_borders", "min_score")
    }
    if preset != "reference":
        return settings, f"NMS radius {settings['nms_radius']}"
    reference = PRESETS["reference"]
    settings.update(detection_threshold=reference.detection_threshold, min_score=reference.detection_threshold,
                    remove_borders=reference.remove_borders, nms_radius=REFERENCE_DETECTOR_BOX,
                    nms="box", nms_iou=reference.nms_iou)
    return settings, f"box NMS of size {REFERENCE_DETECTOR_BOX} (IoU {reference.nms_iou:g})"


def evaluate_weights(loaded, dataset, settings: dict, preset: str, batch_size: int, device,
                     name: str = "") -> dict[str, float]:
    """The detector metrics of ``loaded`` (a :class:`~.model.loading.LoadedWeights`) on ``dataset``;
    ``name``: the progress bar's."""
    loader = DataLoader(dataset, batch_size=batch_size)
    common = {k: settings[k] for k in ("distance_threshold", "detection_threshold", "nms_radius",
                                       "remove_borders", "min_score")}
    if preset == "reference":
        accumulator = BoxNMSDetectorMetrics(**common, box_size=REFERENCE_DETECTOR_BOX, nms_iou=settings["nms_iou"])
    else:
        accumulator = DetectorMetricsAccumulator(**common)
    return evaluate_detector_with(accumulator, loaded.model.to(device),
                                  tqdm(loader, desc=name or loaded.description, leave=False), device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = build_config(args.config)
        dataset = DATASETS[config["data"]["name"]](config["data"], args.split)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings, nms_text = preset_settings(config["validation"], args.preset)
    device = resolve_device(args.device)
    print(
        f"{len(dataset)} {args.split} images of {config['data']['name']}; preset {args.preset}: {nms_text}, "
        f"distance {settings['distance_threshold']} px, detection threshold {settings['detection_threshold']}, "
        f"border {settings['remove_borders']}, curve from score {settings['min_score']}"
    )
    report = {
        "config": str(args.config),
        "preset": args.preset,
        "split": args.split,
        "images": len(dataset),
        "settings": settings,
        "results": {},
    }
    for weights in args.weights:
        try:
            loaded = load_superpoint(weights)
        except WeightsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        metrics = evaluate_weights(loaded, dataset, settings, args.preset, args.batch_size, device, str(weights))
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"{loaded.description}: {shown}")
        report["results"][str(weights)] = {"description": loaded.description, **metrics}
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            yaml.safe_dump(report, handle, sort_keys=False)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
