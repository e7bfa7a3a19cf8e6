"""Download, check or list SuperPoint weights (the loader is :mod:`superpoint_training.model.loading`).

Examples (tests never download)::

    python -m superpoint_training.weights download            # rpautrat's MIT v6 weights
    python -m superpoint_training.weights check FILE          # what a file is, and whether it loads
    python -m superpoint_training.weights list                # the named weights and where they are
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .model.loading import NAMED_WEIGHTS, V6_URL, WeightsError, default_weights_name, download, load_superpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m superpoint_training.weights",
        description="Download or check SuperPoint weights.",
        epilog="examples:\n  python -m superpoint_training.weights download\n"
        "  python -m superpoint_training.weights check ~/.cache/superpoint_ros/superpoint_v6_from_tf.pth\n"
        "  python -m superpoint_training.weights list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download rpautrat's MIT v6 weights into ~/.cache/superpoint_ros/")
    dl.add_argument("--url", default=V6_URL)
    dl.add_argument("--output", type=Path, default=None)
    check = sub.add_parser("check", help="say what a weights file is and whether it loads")
    check.add_argument("file")
    sub.add_parser("list", help="list the named weights and where they are")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            download(args.url, args.output)
        elif args.command == "check":
            loaded = load_superpoint(args.file)
            n_params = sum(p.numel() for p in loaded.model.parameters())
            print(f"{loaded.description}: {loaded.model.config}, {n_params} parameters")
        else:
            for name, (path, how) in NAMED_WEIGHTS.items():
                state = "present" if path is not None and path.exists() else how
                print(f"{name:24s} {path or '-'}  [{state}]")
            print(f"default: {default_weights_name()}")
    except (WeightsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
