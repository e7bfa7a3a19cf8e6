"""Train MagicPoint / SuperPoint: ``python -m superpoint_training.train CONFIG EXPERIMENT_NAME``.

The reference's command form. Everything is written under ``$SUPERPOINT_EXPER_DIR`` (default
``experiments/``) ``/EXPERIMENT_NAME/``; running the same command again resumes from its
``checkpoint.pth``. See :mod:`superpoint_training.training.trainer` for what is written and when.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from .common.cli import command_parser, flag
from .common.config import ConfigError
from .data.image_folder import DataError
from .model.loading import WeightsError

DEBUG_VARIABLE = "SUPERPOINT_DEBUG"

EXAMPLES = """
  python -m superpoint_training.train config/magic-point_shapes.yaml magic-point_synth
  python -m superpoint_training.train config/magic-point_shapes_cpu.yaml mp_cpu --set train.num_threads=2
  python -m superpoint_training.train config/magic-point_shapes.yaml mp_ft --pretrained-model magicpoint_shapes
  torchrun --nproc_per_node 4 -m superpoint_training.train config/magic-point_shapes.yaml mp_4gpu
  tensorboard --logdir experiments/

Ctrl+C saves a checkpoint and exits with status 130 (143 for SIGTERM, also when sent to the whole process group);
the same command resumes, only with the same data, labels, model, loss and --pretrained-model (else an error says
what differs: --overwrite starts over, a new EXPERIMENT_NAME keeps both). The model-only weights
(experiments/NAME/weights.pth) load in Extractor(weights=...) and in --pretrained-model. Errors are one line
(status 2); --debug or SUPERPOINT_DEBUG=1 shows the traceback.
"""


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line; for an error raised in a DataLoader worker (which
    PyTorch re-raises with the worker's traceback in the message), the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        name = type(error).__name__
        text = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("superpoint_training.train", "Train MagicPoint (detector) or SuperPoint from a YAML config.",
                            EXAMPLES)
    parser.add_argument("config", help="YAML config (config/*.yaml)")
    parser.add_argument("experiment_name", help="output folder name under $SUPERPOINT_EXPER_DIR (default experiments/)")
    parser.add_argument(
        *flag("pretrained-model"),
        default=None,
        help="start from these weights (a file or a name: magicpoint_shapes, superpoint_v6_from_tf, ...); "
        "the reference's spelling --pretrained_model works too",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value, e.g. --set train.iterations=1000 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming a checkpoint")
    parser.add_argument(*flag("no-progress"), action="store_true", help="log lines instead of a progress bar")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also when ${DEBUG_VARIABLE} is set to 1)")
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if importlib.util.find_spec("tensorboard") is None:  # the trainer logs to TensorBoard
        print("error: training needs tensorboard, which is not installed: pip install '.[training]' "
              "(in the repository), or pip install tensorboard", file=sys.stderr)
        return 2
    from .training.trainer import TrainingDiverged, train

    try:
        trainer = train(
            args.config,
            args.experiment_name,
            overrides=args.overrides,
            pretrained=args.pretrained_model,
            overwrite=args.overwrite,
            show_progress=not args.no_progress,
        )
    except (ConfigError, WeightsError, DataError) as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 3
    if trainer.stopped_by is not None:
        return 128 + int(trainer.stopped_by)  # 130 after Ctrl+C, 143 after SIGTERM: scripts can tell it stopped
    return 0


if __name__ == "__main__":
    sys.exit(main())
