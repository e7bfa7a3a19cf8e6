"""Download, check or list SuperPoint weights (the loader is :mod:`superpoint_training.model.loading`).

Examples (tests never download)::

    python -m superpoint_training.weights download            # rpautrat's MIT v6 weights
    python -m superpoint_training.weights check FILE          # what a file is, and whether it loads
    python -m superpoint_training.weights list                # the named weights and where they are
    python -m superpoint_training.weights defaults IN OUT --set detection_threshold=0.002 --set subpixel=gaussian
    python -m superpoint_training.weights interpolate A B OUT --fraction 0.5   # (1-f) A + f B
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common.cli import command_parser
from .common.config import ConfigError, deep_update, parse_override
from .model.loading import (
    NAMED_WEIGHTS,
    STORED_DETECTION_OPTIONS,
    V6_URL,
    WeightsError,
    default_weights_name,
    download,
    interpolate_weights,
    load_superpoint,
    set_detection_defaults,
)


def provenance_lines(checkpoint: dict | None) -> list[str]:
    """Where a weights file came from, one fact per line: run, training data and labels, start
    weights, machine and library versions (what the trainer records under ``provenance``)."""
    if checkpoint is None:
        return ["provenance: none stored (a published state dict, or untrained weights)"]
    lines = []
    if checkpoint.get("experiment") is not None:
        lines.append(f"experiment: {checkpoint['experiment']}, iteration {checkpoint.get('iteration')}")
    if checkpoint.get("metrics"):
        lines.append("validation: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in checkpoint["metrics"].items()))
    data = (checkpoint.get("config") or {}).get("data") or {}
    if data:
        shown = {k: data[k] for k in ("name", "images", "labels", "validation_images", "resize") if data.get(k)}
        lines.append("data: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if "interpolation" in checkpoint:
        lines.append(f"interpolation: {checkpoint['interpolation']}")
    provenance = checkpoint.get("provenance")
    if provenance is None:
        lines.append("provenance: not recorded (a file written before the trainer recorded it)")
        return lines
    pretrained = provenance.get("pretrained")
    if pretrained:
        run = f", experiment {pretrained['experiment']} iteration {pretrained['iteration']}" if pretrained.get(
            "experiment") else ""
        digest = f", sha256 {pretrained['sha256'][:16]}" if pretrained.get("sha256") else ""
        path = pretrained.get("path")
        where = "no file" if not path else "" if path == pretrained["source"] else path
        facts = ", ".join(part for part in (where, digest.lstrip(", "), run.lstrip(", ")) if part)
        lines.append(f"pretrained: {pretrained['source']} ({facts})")
    else:
        lines.append("pretrained: none (trained from the initialisation)")
    for key, entry in (provenance.get("labels") or {}).items():
        facts = ", ".join(f"{k} {entry[k]}" for k in ("weights", "homographies", "images") if entry.get(k) is not None)
        lines.append(f"{key}: {entry['folder']}" + (f" ({facts})" if facts else " (no export summary found)"))
    machine = provenance.get("machine") or {}
    if machine:
        versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items() if v)
        gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
        lines.append(f"machine: {machine.get('cpu')}, {machine.get('cores')} cores{gpu}; python {machine.get('python')}")
        lines.append(f"versions: {versions}")
    if provenance.get("command"):
        lines.append(f"command: {provenance['command']}")
    if provenance.get("saved"):
        lines.append(f"saved: {provenance['saved']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "superpoint_training.weights",
        "Download or check SuperPoint weights.",
        [
            "python -m superpoint_training.weights download",
            "python -m superpoint_training.weights check ~/.cache/superpoint_ros/superpoint_v6_from_tf.pth",
            "python -m superpoint_training.weights list",
            "python -m superpoint_training.weights defaults experiments/sp/weights.pth sp.pth --set subpixel=gaussian",
            "python -m superpoint_training.weights interpolate superpoint_ros superpoint_ros_rotation mix.pth --fraction 0.5",
        ],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download rpautrat's MIT v6 weights into ~/.cache/superpoint_ros/")
    dl.add_argument("--url", default=V6_URL)
    dl.add_argument("--output", type=Path, default=None)
    check = sub.add_parser("check", help="say what a weights file is and whether it loads")
    check.add_argument("file")
    sub.add_parser("list", help="list the named weights and where they are")
    defaults = sub.add_parser("defaults", help="copy a project checkpoint with new detection defaults "
                              "(what the Extractor, node and evaluation use when not told otherwise)")
    defaults.add_argument("file")
    defaults.add_argument("output")
    defaults.add_argument("--set", dest="options", metavar="KEY=VALUE", action="append",
                          default=[], help=f"one of {', '.join(STORED_DETECTION_OPTIONS)} (repeatable)")
    mix = sub.add_parser("interpolate", help="write (1 - f) * FIRST + f * SECOND, parameter by parameter "
                         "(a network and its fine-tune: WiSE-FT); metadata and defaults from FIRST")
    mix.add_argument("first", help="a project checkpoint: a path or a name such as superpoint_ros")
    mix.add_argument("second")
    mix.add_argument("output")
    mix.add_argument("--fraction", type=float, required=True, help="weight of SECOND, in [0, 1]")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            download(args.url, args.output)
        elif args.command == "check":
            loaded = load_superpoint(args.file)
            n_params = sum(p.numel() for p in loaded.model.parameters())
            print(f"{loaded.description}: {loaded.model.config}, {n_params} parameters")
            print(f"detection defaults: {loaded.detection_defaults}")
            for line in provenance_lines(loaded.checkpoint):
                print(line)
        elif args.command == "defaults":
            options: dict = {}
            for text in args.options:  # the same KEY=VALUE (YAML value) as train --set
                deep_update(options, parse_override(text))
            loaded = set_detection_defaults(args.file, args.output, **options)
            print(f"wrote {args.output}: detection defaults {loaded.detection_defaults}")
        elif args.command == "interpolate":
            interpolate_weights(args.first, args.second, args.fraction, args.output)
            print(f"wrote {args.output}: {1 - args.fraction:g} x {args.first} + {args.fraction:g} x {args.second}")
        else:
            for name, (path, how) in NAMED_WEIGHTS.items():
                state = "present" if path is not None and path.exists() else how
                print(f"{name:24s} {path or '-'}  [{state}]")
            print(f"default: {default_weights_name()}")
    except (WeightsError, ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
