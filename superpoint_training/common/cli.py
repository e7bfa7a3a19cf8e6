"""What the commands share: the parser set-up (:func:`command_parser`: prog, description, examples,
one flag spelling), and for every tool that extracts the Extractor's command-line options (its
keyword names, hyphenated) and the settings record written beside features."""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections.abc import Sequence

from ..model.extractor import BACKEND_CHOICES, PRECISIONS, Extractor
from ..model.keypoints import DESCRIPTOR_SAMPLING, SUBPIXEL, no_limit, parse_scales


class CommandHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Description and examples as written; an option's old underscore spelling (``--no_progress``
    beside ``--no-progress``) is accepted but left out of ``--help``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [option for option in action.option_strings if not is_underscore_alias(option, action.option_strings)]
        if len(shown) != len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


def is_underscore_alias(option: str, options: Sequence[str]) -> bool:
    """``--no_progress`` when ``--no-progress`` is among ``options``."""
    return option.startswith("--") and "_" in option and option.replace("_", "-") in options


def flag(name: str) -> tuple[str, ...]:
    """The option strings of a flag: ``flag("no-progress")`` gives ``("--no-progress", "--no_progress")``
    (the hyphenated spelling first: it names the flag in usage and help; the underscore one is an alias)."""
    hyphenated = "--" + name.replace("_", "-")
    underscored = "--" + name.replace("-", "_")
    return (hyphenated,) if underscored == hyphenated else (hyphenated, underscored)


def command_parser(module: str, description: str, examples: str | Sequence[str] | None = None,
                   heading: str = "examples:") -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``: ``description`` on top, ``examples`` below (text as
    written, or one command per item, indented), and help that hides the underscore aliases."""
    if examples is None:
        epilog = None
    elif isinstance(examples, str):
        epilog = heading + ("" if examples.startswith("\n") else "\n") + examples
    else:
        epilog = heading + "\n" + "\n".join(f"  {line}" for line in examples)
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description, epilog=epilog,
                                   formatter_class=CommandHelpFormatter)


def docstring_examples(doc: str) -> str:
    """The text after ``Examples::`` in a command's module docstring."""
    return doc.split("Examples::", 1)[1]


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


def add_detection_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add --detection-threshold, --nms-radius and --remove-borders (default None: the weights format's)."""
    parser.add_argument(*flag("detection-threshold"), type=float, default=None,
                        help="score threshold (default: the weights format's, 0.005)")
    parser.add_argument(*flag("nms-radius"), type=int, default=None,
                        help="max-pool NMS radius in pixels (default: the weights format's, 4)")
    parser.add_argument(*flag("remove-borders"), type=int, default=None,
                        help="drop keypoints this close to the edge (default: the weights format's, 4)")


def add_extractor_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                            max_keypoints: int | None = None) -> None:
    """Add --weights, --device, --backend, --precision, --max-keypoints, --detection-threshold,
    --nms-radius, --remove-borders, --descriptor-sampling, --subpixel, --scales and --resize. ``max_keypoints``: the
    tool's default (None, -1 or 0: every point above the threshold)."""
    parser.add_argument("--weights", default="default", help="weights file or name (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    add_backend_arguments(parser)
    parser.add_argument(*flag("max-keypoints"), type=int, default=max_keypoints,
                        help="keep the best N keypoints per image, -1 or 0 keeps all above the threshold "
                        "(default: %(default)s)")
    add_detection_arguments(parser)
    parser.add_argument(*flag("descriptor-sampling"), choices=DESCRIPTOR_SAMPLING, default=None,
                        help="descriptor sampling convention (default: the weights format's)")
    parser.add_argument("--subpixel", choices=SUBPIXEL, default=None,
                        help="sub-pixel refinement of keypoints: corner (where the image's edge lines meet in a 7x7 window), "
                        "gaussian, quadratic, none, or learned (weights that carry a trained refinement: python -m "
                        "superpoint_training.train_refinement) (default: the weights')")
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
