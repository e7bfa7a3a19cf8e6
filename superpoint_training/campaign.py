"""The weights campaign: the reference's whole pipeline, end to end, resumable, on a time budget.

    python -m superpoint_training.campaign config/campaign_cpu.yaml
    python -m superpoint_training.campaign config/campaign_cpu.yaml --redo superpoint   # continue a stage

Stages, in order (each writes under ``$SUPERPOINT_EXPER_DIR/<name>/`` and is recorded in its
``campaign_state.yaml``; a finished stage is not run again):

1. ``shapes``: MagicPoint on Synthetic Shapes (``train_config``), or named weights (``weights``)
   when a shipped MagicPoint stands in for it;
2. ``photo_crops``: training and held-out validation images cut from the photos, held out by group
   (:mod:`superpoint_training.data.photo_crops`);
3. ``adaptation``: Homographic Adaptation labels for both folders (the detector of ``weights``, or
   of the previous stage);
4. ``magicpoint_photos``: the reference's second round (MagicPoint trained on those labels, then
   labels again), kept only when its repeatability on the held-out pairs is higher;
5. ``superpoint``: SuperPoint on warped pairs of the crops with the labels;
6. ``report``: the final weights beside SIFT, ORB and the ``baseline_weights`` on the HPatches-style
   folder ``report.hpatches`` (one evaluate run), and visual odometry on ``report.tum`` when present;
7. ``card``: ``WEIGHTS_CARD.md`` with the command, data, iterations, CPU flags, wall time and tables.

Budgets: every training stage has ``max_minutes`` (wall clock). A stage stopped by its budget is
recorded as done with ``budget_reached``; ``--redo STAGE`` continues it from its checkpoint (with a
new budget) and runs the stages after it again. Ctrl+C or a kill leaves the running stage resumable:
the trainer keeps its last checkpoint and the export skips the labels it wrote. Precision ``auto``:
bf16 where the CPU has native bf16 (AVX-512 BF16, AMX) or on CUDA, else fp32.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from .common.cli import command_parser
from .common.config import ConfigError
from .training.campaign import STAGES, Campaign, load_campaign_config


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "superpoint_training.campaign",
        "Run the weights campaign: Synthetic Shapes -> MagicPoint -> homographic adaptation of the "
        "photos -> MagicPoint on the photos -> SuperPoint -> report -> weights card. Resumable.",
        [
            "python -m superpoint_training.campaign config/campaign_cpu.yaml",
            "python -m superpoint_training.campaign config/campaign_cpu.yaml --redo superpoint --set superpoint.max_minutes=60",
            "python -m superpoint_training.campaign config/campaign_cpu.yaml --until adaptation",
        ],
    )
    parser.add_argument("config", help="campaign YAML (config/campaign_cpu.yaml, config/campaign_gpu.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value, e.g. superpoint.max_minutes=30")
    parser.add_argument("--redo", choices=STAGES, help="run this stage (continuing its checkpoint) and the later ones again")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_campaign_config(args.config, args.overrides)
    except (ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    campaign = Campaign(config, command="python -m superpoint_training.campaign " + shlex.join(argv))
    if args.redo:
        campaign.redo(args.redo)
    try:
        campaign.run(args.until)
    except KeyboardInterrupt:
        print("[campaign] interrupted: run the same command again to continue", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"[campaign] finished: {campaign.dir / 'WEIGHTS_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
