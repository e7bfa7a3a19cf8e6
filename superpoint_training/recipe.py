"""The reference's full pipeline on one GPU, stage by stage: ``python -m superpoint_training.recipe``.

Prints, for each stage, the command to run, the expected wall time on one H100 and the disk the
labels take. ``--dry-run`` runs every stage, with the same commands, for two iterations on the CPU
on tiny data (written under ``--workdir``), so that the recipe itself is tested (test/test_recipe.py).

The wall times are ESTIMATES (no GPU was lent when they were derived). A step costs the larger of:

- its FLOPs: the network's (counted on the model, :func:`network_gflops`; backward = 2 forwards) over
  an H100's rate on this network (the measured anchor in ../shared/notes/reference-facts.md:
  SuperPoint forward in fp16, 0.47 ms per 480x640 frame at batch 32; TF32 training at half that),
  times the whole step over the network alone as measured on the CPU (augmentation, losses,
  optimizer; for the export the warps and their aggregation);
- its launches: the operators one step dispatches (counted on the CPU) times :data:`LAUNCH_US`,
  the floor of an eager PyTorch operator on a GPU; small batches (SuperPoint's 3 pairs) are bound by it.

``--measure`` measures the step ratios and operator counts again on this machine. Data loading is
assumed hidden behind the GPU by the DataLoader workers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .common.cli import command_parser

REPOSITORY = Path(__file__).resolve().parent.parent  # a checkout (an installed copy has no config/)


def repository() -> Path:
    """The folder whose ``config/`` the commands read: the working directory (the commands are
    typed from the repository root), else the checkout this module lives in."""
    for candidate in (Path.cwd(), REPOSITORY):
        if (candidate / "config" / "magic-point_shapes.yaml").is_file():
            return candidate
    raise FileNotFoundError("config/magic-point_shapes.yaml not found: run from the repository root")

# H100 anchor (reference-facts.md, "Speed anchors"): the whole network (detector and descriptor heads)
# at 480x640, fp16, batch 32: 0.47 ms per frame.
ANCHOR_MS, ANCHOR_SIZE = 0.47, (480, 640)
# The configs train in fp32, which CUDA runs as TF32 (trainer: allow_tf32): half the fp16 tensor rate.
TF32_SLOWDOWN = 2.0
# Per stage, measured on the CPU by --measure (MEASURED_ON): the whole step over the network's forward
# and backward alone ("ratio"), and the operators one step dispatches ("ops").
MEASURED = {"shapes": {"ratio": 1.06, "ops": 1424}, "magicpoint_coco": {"ratio": 0.81, "ops": 1515},
            "superpoint": {"ratio": 1.0, "ops": 2238}, "export": {"ratio": 1.27, "ops": 2512}}
MEASURED_ON = "2026-12-06, 2-core Intel Xeon with AMX, torch 2.13 CPU, 1 thread, cores shared with other jobs"
# The floor of one eager PyTorch operator on a GPU (launch and Python dispatch), microseconds.
LAUNCH_US = 10.0
# Bytes per label file of magic-point_coco_export.yaml at 240x320 (prob float16 and counts uint8,
# compressed, plus the keypoints): 138,363 on average over 7 photos of ../shared/data/photos
# (magicpoint_shapes, 10 homographies), 2026-12-06; --pred-only keeps only the keypoints.
LABEL_BYTES = 138_363
COCO_TRAIN, COCO_VAL = 82_783, 40_504


@dataclass
class Stage:
    name: str
    module: str  # python -m superpoint_training.<module>
    args: list[str]  # as printed; $SUPERPOINT_EXPER_DIR and $SUPERPOINT_DATA_DIR expanded when run
    dry: list[str] = field(default_factory=list)  # extra arguments for --dry-run
    what: str = ""

    def command(self) -> str:
        return " ".join(["python -m superpoint_training." + self.module, *self.args])


TRAIN_DRY = ["--no-progress", "--set", "train.iterations=2", "--set", "train.batch_size=2", "--set", "train.device=cpu",
             "--set", "train.num_workers=0", "--set", "train.num_threads=1", "--set", "train.log_every=1",
             "--set", "train.checkpoint_every=2", "--set", "validation.every=2", "--set", "validation.batch_size=2",
             "--set", "train.precision=fp32"]
IMAGES_DRY = ["--set", "data.resize=[32,40]", "--set", "data.validation_size=2"]
EXPORT_DRY = ["--device", "cpu", "--batch-size", "2", "--no-progress", "--set", "model.homography_adaptation.num=2",
              "--set", "data.resize=[32,40]", "--set", "data.num_workers=0"]

STAGES = [
    Stage("shapes", "train", ["config/magic-point_shapes.yaml", "magic-point_synth"],
          [*TRAIN_DRY, "--set", "data.suffix=dry", "--set", "data.validation_size=2",
           "--set", "data.generation.split_sizes={training: 1, validation: 1, test: 1}",
           "--set", "data.generation.image_size=[96,128]", "--set", "data.preprocessing.resize=[32,40]"],
          "MagicPoint on Synthetic Shapes (50k iterations, batch 64, 120x160)"),
    Stage("export1", "export_detections",
          ["config/magic-point_coco_export.yaml", "magic-point_synth", "--export-name", "magic-point_coco-export1"],
          EXPORT_DRY, "Homographic Adaptation labels for COCO train2014 (100 homographies, 240x320)"),
    Stage("magicpoint_coco", "train",
          ["config/magic-point_coco_train.yaml", "magic-point_coco",
           "--pretrained-model", "$SUPERPOINT_EXPER_DIR/magic-point_synth/weights.pth"],
          [*TRAIN_DRY, *IMAGES_DRY], "MagicPoint on COCO with the first labels (18k iterations, batch 32, 240x320)"),
    Stage("export2", "export_detections",
          ["config/magic-point_coco_export.yaml", "magic-point_coco", "--export-name", "magic-point_coco-export2"],
          EXPORT_DRY, "the second round of labels, from the COCO MagicPoint"),
    Stage("patches", "write_validation_patches",
          ["$SUPERPOINT_DATA_DIR/COCO/val2014", "$SUPERPOINT_EXPER_DIR/outputs/coco_patches"],
          ["--count", "2", "--resize", "32", "40"], "SuperPoint's validation pairs from val2014 (100 pairs)"),
    Stage("superpoint", "train",
          ["config/superpoint_coco.yaml", "superpoint_coco",
           "--pretrained-model", "$SUPERPOINT_EXPER_DIR/magic-point_coco/weights.pth"],
          [*TRAIN_DRY, *IMAGES_DRY], "SuperPoint on COCO with the second labels (300k iterations, batch 3, 240x320)"),
    Stage("hpatches", "evaluate",
          ["--dataset", "$SUPERPOINT_DATA_DIR/hpatches-sequences-release", "--preset", "reference",
           "--weights", "$SUPERPOINT_EXPER_DIR/superpoint_coco/weights.pth",
           "--output", "$SUPERPOINT_EXPER_DIR/hpatches_superpoint_coco"],
          ["--device", "cpu", "--methods", "superpoint", "--max-sequences", "2", "--no-plots", "--resize", "none",
           "--workers", "1", "--match-pictures", "0"],
          "the HPatches evaluation under the reference's protocol (580 pairs)"),
]


def network_gflops(size: tuple[int, int], descriptor: bool) -> float:
    """Forward GFLOP (2 per multiply-add) of the v6 network on one (H, W) image, counted on its
    convolutions (BatchNorm, ReLU and pooling are a few percent more and not counted)."""
    import torch

    from .model.network import ModelConfig, SuperPoint

    model = SuperPoint(ModelConfig(variant="v6", descriptor_dim=256 if descriptor else 0)).eval()
    total = [0]

    def count(module, inputs, output):
        kh, kw = module.kernel_size
        total[0] += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 1, *size))
    for hook in hooks:
        hook.remove()
    return total[0] / 1e9


def gpu_rate_tflops() -> float:
    """The H100's sustained fp16 rate on this network, from the measured anchor."""
    return network_gflops(ANCHOR_SIZE, True) / (ANCHOR_MS * 1e-3) / 1e3


# stage -> (config, images per step at full size, image size, descriptor head, steps, measured key)
TRAINING = {
    "shapes": ("magic-point_shapes.yaml", 64, (120, 160), False, 50_000),
    "magicpoint_coco": ("magic-point_coco_train.yaml", 32, (240, 320), False, 18_000),
    "superpoint": ("superpoint_coco.yaml", 2 * 3, (240, 320), True, 300_000),  # pairs: 2 images each
}
HOMOGRAPHIES, EXPORT_BATCH = 100, 8  # magic-point_coco_export.yaml (plus the identity)


def estimates() -> dict[str, dict]:
    """Per stage: estimated GPU seconds and, for exports, label bytes; see the module docstring."""
    rate = gpu_rate_tflops() * 1e12 / TF32_SLOWDOWN
    out: dict[str, dict] = {}
    for name, (_, images, size, descriptor, steps) in TRAINING.items():
        ratio = max(MEASURED[name]["ratio"], 1.0)  # below 1: timing noise on a shared CPU
        flops = 3 * images * network_gflops(size, descriptor) * 1e9 * ratio
        out[name] = {"seconds": steps * max(flops / rate, MEASURED[name]["ops"] * LAUNCH_US * 1e-6)}
    warps = COCO_TRAIN * (HOMOGRAPHIES + 1)
    flops = warps * network_gflops((240, 320), False) * 1e9 * MEASURED["export"]["ratio"]
    launches = COCO_TRAIN / EXPORT_BATCH * MEASURED["export"]["ops"] * LAUNCH_US * 1e-6
    for name in ("export1", "export2"):
        out[name] = {"seconds": max(flops / rate, launches), "label_bytes": COCO_TRAIN * LABEL_BYTES}
    out["patches"] = {"seconds": 30.0}  # 100 images read, warped and written
    # 580 pairs, 6 images per sequence at 480x640 for each protocol, plus OpenCV's RANSAC on the CPU
    out["hpatches"] = {"seconds": 2 * 696 * network_gflops((480, 640), True) * 1e9 / rate + 300.0}
    return out


def measure(threads: int = 1) -> dict[str, dict]:
    """Step ratio and operator count of each training stage (batch 2 at the stage's size) and of the
    export (2 images, 10 homographies), on the CPU: what :data:`MEASURED` holds."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from .model.extractor import Extractor
    from .training import trainer
    from .training.homographic_adaptation import HomographicAdaptation
    from .training.pseudo_labels import DEFAULTS as EXPORT_DEFAULTS

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    def timed(step: Callable[[], object], repeat: int = 2) -> float:
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(repeat):
            step()
        return (time.perf_counter() - start) / repeat

    torch.set_num_threads(threads)
    results = {}
    for name, (config_name, _, size, descriptor, _) in TRAINING.items():
        config = trainer.build_config(repository() / "config" / config_name, [
            "data.images=unused", "data.labels=", "data.validation_patches=", "train.device=cpu",
            "train.photometric=device"] if descriptor else ["train.device=cpu", "train.photometric=device"])
        task = trainer.TASKS[config["task"]](config, torch.device("cpu"))
        model = trainer.SuperPoint(task.model_config())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        kmap = (torch.rand(2, *size) > 0.99).float()
        batch = {"image": torch.rand(2, 1, *size), "keypoint_map": kmap, "valid_mask": torch.ones(2, *size)}
        images = torch.rand(4 if descriptor else 2, 1, *size)

        def step(batch=batch, task=task, model=model, optimizer=optimizer):
            loss, _, _ = task.loss(model, task.augment(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def network(model=model, images=images):
            logits, descriptors = model(images)
            (logits.sum() + (descriptors.sum() if descriptors is not None else 0)).backward()

        Count.ops = 0
        with Count():
            step()
        results[name] = {"ratio": round(timed(step) / timed(network), 2), "ops": Count.ops}
    extractor = Extractor("magicpoint_shapes", device="cpu", warmup=False)
    ha = dict(EXPORT_DEFAULTS["model"]["homography_adaptation"], num=10)
    adaptation = HomographicAdaptation(extractor, ha)
    images = torch.rand(2, 1, 240, 320)
    warps = torch.rand(2 * (ha["num"] + 1), 1, 240, 320)
    with torch.no_grad():
        Count.ops = 0
        with Count():
            adaptation(images, generator=torch.Generator().manual_seed(0))
        whole = timed(lambda: adaptation(images, generator=torch.Generator().manual_seed(0)))
        alone = timed(lambda: extractor.model(warps))
    results["export"] = {"ratio": round(whole / alone, 2), "ops": round(Count.ops * EXPORT_BATCH / 2)}
    return results


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe() -> str:
    lines = [
        "The full pipeline on one GPU (the reference's configs; set SUPERPOINT_DATA_DIR and SUPERPOINT_EXPER_DIR,",
        "check the data first: python -m superpoint_training.check_data). Times are ESTIMATES for one H100,",
        f"derived from FLOPs (H100 anchor: {gpu_rate_tflops():.0f} TFLOP/s fp16 on this network, TF32 at half that),",
        f"operator counts ({LAUNCH_US:g} us each) and step ratios measured on the CPU ({MEASURED_ON});",
        "none was measured on a GPU.",
        "",
    ]
    total = 0.0
    table = estimates()
    for number, stage in enumerate(STAGES, start=1):
        estimate = table[stage.name]
        total += estimate["seconds"]
        disk = f", labels {estimate['label_bytes'] / 1e9:.0f} GB (with --pred-only: the keypoints alone)" \
            if "label_bytes" in estimate else ""
        lines += [f"{number}. {stage.name}: {stage.what}", f"   {stage.command()}",
                  f"   estimate: {_duration(estimate['seconds'])}{disk}"]
    lines.append(f"\ntotal (estimate): {_duration(total)} on one H100")
    return "\n".join(lines)


STAGE_ORDER = [stage.name for stage in STAGES]


def _prepare_tiny_data(data: Path) -> None:
    """A few small photos as COCO train2014/val2014, and two HPatches sequences built from them."""
    import cv2
    import numpy as np
    from skimage import data as skimage_data

    from .data.hpatches import build

    photos = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket(),
              skimage_data.camera()]
    for split in ("train2014", "val2014"):
        folder = data / "COCO" / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, photo in enumerate(photos):
            small = np.ascontiguousarray(photo[::4, ::4])
            cv2.imwrite(str(folder / f"COCO_{split}_{i:012d}.jpg"), small[..., ::-1] if small.ndim == 3 else small)
    rgb = [(f"p{i}", np.ascontiguousarray(p[::4, ::4])) for i, p in enumerate(photos[:2])]
    build(data / "hpatches-sequences-release", rgb, size=(64, 80), progress=False)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _command(module: str) -> Callable[[list[str]], int]:
    import importlib

    return importlib.import_module(f"superpoint_training.{module}").main


def dry_run(workdir: Path, stages: list[str] | None = None) -> list[tuple[str, int, float]]:
    """Run every stage's command, with its dry-run arguments, on tiny data under ``workdir``;
    returns (stage, exit status, seconds) and stops at the first failure."""
    workdir = workdir.resolve()
    data, exper = workdir / "data", workdir / "experiments"
    _prepare_tiny_data(data)
    results = []
    with _environment(SUPERPOINT_DATA_DIR=str(data), SUPERPOINT_EXPER_DIR=str(exper)):
        for stage in STAGES:
            if stages and stage.name not in stages:
                continue
            argv = [os.path.expandvars(a) for a in stage.args] + stage.dry
            argv = [str(repository() / a) if a.startswith("config/") else a for a in argv]
            print(f"[dry-run] {stage.name}: python -m superpoint_training.{stage.module} {' '.join(argv)}", flush=True)
            start = time.perf_counter()
            status = _command(stage.module)(argv)
            results.append((stage.name, status, time.perf_counter() - start))
            if status != 0:
                print(f"[dry-run] {stage.name} failed with status {status}", file=sys.stderr)
                break
    return results


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "superpoint_training.recipe",
        "The full pipeline on one GPU: each stage's command, estimated wall time and label disk use.",
        [
            "python -m superpoint_training.recipe              # the recipe",
            "python -m superpoint_training.recipe --dry-run    # every stage, 2 iterations, tiny data, CPU",
        ],
    )
    parser.add_argument("--dry-run", action="store_true", help="run every stage for 2 iterations on the CPU on tiny data")
    parser.add_argument("--workdir", type=Path, default=None, help="dry-run folder (default: a temporary one)")
    parser.add_argument("--measure", action="store_true",
                        help="measure the step ratios and operator counts on this CPU (a minute or two)")
    parser.add_argument("--stages", default="", help=f"dry-run only these (comma list of {','.join(STAGE_ORDER)})")
    args = parser.parse_args(argv)
    if args.measure:
        from .common.machine import describe_machine

        print(f"# {time.strftime('%Y-%m-%d')}, {describe_machine()}")
        print(f"MEASURED = {measure()}")
        return 0
    if not args.dry_run:
        print(describe())
        return 0
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGE_ORDER)})")
    try:
        repository()
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recipe_dry_")))
        results = dry_run(workdir, stages)
    for name, status, seconds in results:
        print(f"[dry-run] {name}: {'ok' if status == 0 else f'status {status}'} ({seconds:.1f} s)")
    failed = [r for r in results if r[1] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
