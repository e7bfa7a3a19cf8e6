"""Download, check or list SuperPoint weights (the loader is :mod:`superpoint_training.model.loading`).

Examples (tests never download)::

    python -m superpoint_training.weights download            # rpautrat's MIT v6 weights
    python -m superpoint_training.weights check FILE          # what a file is, and whether it loads
    python -m superpoint_training.weights list                # the named weights and where they are
    python -m superpoint_training.weights defaults IN OUT --set detection_threshold=0.002 --set subpixel=gaussian
    python -m superpoint_training.weights interpolate A B OUT --fraction 0.5   # (1-f) A + f B
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, deep_update, parse_override
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m superpoint_training.weights",
        description="Download or check SuperPoint weights.",
        epilog="examples:\n  python -m superpoint_training.weights download\n"
        "  python -m superpoint_training.weights check ~/.cache/superpoint_ros/superpoint_v6_from_tf.pth\n"
        "  python -m superpoint_training.weights list\n"
        "  python -m superpoint_training.weights defaults experiments/sp/weights.pth sp.pth --set subpixel=gaussian\n"
        "  python -m superpoint_training.weights interpolate superpoint_ros superpoint_ros_rotation mix.pth --fraction 0.5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
