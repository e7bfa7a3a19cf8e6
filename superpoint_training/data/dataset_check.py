"""What the training and evaluation configs expect under ``$SUPERPOINT_DATA_DIR``, and a check of a
data folder against it: layout, image counts and sizes, what is missing, where the official archives
are published. Nothing here downloads anything.

The facts (counts, sizes, archive addresses) are those of the official releases: MS-COCO 2014
(cocodataset.org: train2014 82,783 images, val2014 40,504, JPEG, at most 640 pixels on a side) and
HPatches (github.com/hpatches/hpatches-dataset: ``hpatches-sequences-release``, 116 sequences, 57
illumination ``i_*`` and 59 viewpoint ``v_*``, each ``1.ppm`` .. ``6.ppm`` and ``H_1_2`` .. ``H_1_6``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset as the configs expect it under the data folder."""

    name: str
    folder: str  # relative to the data folder ($SUPERPOINT_DATA_DIR)
    kind: str  # "images" (a folder of images) or "hpatches" (sequence folders)
    expected: int  # images (kind images) or sequences (kind hpatches) in the full release
    sizes: str  # what the images' sizes should be, in words
    used_by: str  # the configs / commands that read it
    archive: str  # where the official archive is published (the user downloads it)
    unpack: str  # how to put it in place


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "coco_train2014", "COCO/train2014", "images", 82_783, "JPEG, at most 640 pixels on the longer side",
            "magic-point_coco_export.yaml, magic-point_coco_train.yaml, superpoint_coco.yaml (data.images)",
            "http://images.cocodataset.org/zips/train2014.zip (13 GB)",
            "unzip train2014.zip -d $SUPERPOINT_DATA_DIR/COCO/",
        ),
        DatasetSpec(
            "coco_val2014", "COCO/val2014", "images", 40_504, "JPEG, at most 640 pixels on the longer side",
            "write_validation_patches (SuperPoint validation pairs), the reference's COCO validation",
            "http://images.cocodataset.org/zips/val2014.zip (6 GB)",
            "unzip val2014.zip -d $SUPERPOINT_DATA_DIR/COCO/",
        ),
        DatasetSpec(
            "hpatches", "hpatches-sequences-release", "hpatches", 116,
            "PPM colour images, each sequence its own size",
            "evaluate --dataset (detector and descriptor metrics)",
            "http://icvl.ee.ic.ac.uk/vbalnt/hpatches/hpatches-sequences-release.tar.gz (1.3 GB; "
            "listed at https://github.com/hpatches/hpatches-dataset)",
            "tar xzf hpatches-sequences-release.tar.gz -C $SUPERPOINT_DATA_DIR/",
        ),
    )
}
HPATCHES_ILLUMINATION, HPATCHES_VIEWPOINT = 57, 59


@dataclass
class CheckResult:
    spec: DatasetSpec
    path: Path
    found: int = 0  # images or complete sequences
    problems: list[str] = field(default_factory=list)  # what is missing or wrong
    notes: list[str] = field(default_factory=list)  # facts: sizes, counts by kind

    @property
    def complete(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        unit = "sequences" if self.spec.kind == "hpatches" else "images"
        state = "ok" if self.complete else ("MISSING" if not self.path.exists() else "INCOMPLETE")
        out = [f"{self.spec.name}: {state}: {self.path} ({self.found:,} of {self.spec.expected:,} {unit})",
               f"  expected: {self.spec.expected:,} {unit}, {self.spec.sizes}; used by {self.spec.used_by}"]
        out += [f"  {note}" for note in self.notes]
        out += [f"  problem: {problem}" for problem in self.problems]
        if not self.complete:
            out.append(f"  get it: {self.spec.archive}; then {self.spec.unpack}")
        return out


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$SUPERPOINT_DATA_DIR``, else the working directory."""
    return Path(os.path.expanduser(str(data_dir or os.environ.get("SUPERPOINT_DATA_DIR") or ".")))


def _sample_sizes(paths: list[Path], count: int) -> tuple[list[tuple[int, int]], list[Path]]:
    """(H, W) of ``count`` images spread over ``paths`` and the ones that did not decode."""
    from .images import read_gray

    step = max(1, len(paths) // max(count, 1))
    sizes, unreadable = [], []
    with _quiet_opencv():
        for path in paths[::step][:count]:
            image = read_gray(path)
            if image is None:
                unreadable.append(path)
            else:
                sizes.append(image.shape[:2])
    return sizes, unreadable


@contextlib.contextmanager
def _quiet_opencv():
    """No OpenCV warnings on stderr for the files that do not decode: the report lists them."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def _size_note(sizes: list[tuple[int, int]], sampled: int) -> str:
    if not sizes:
        return "sizes: none readable"
    heights, widths = [s[0] for s in sizes], [s[1] for s in sizes]
    return (f"sizes of {sampled} sampled images: height {min(heights)}-{max(heights)}, "
            f"width {min(widths)}-{max(widths)}")


def check_images(spec: DatasetSpec, path: Path, sample: int) -> CheckResult:
    result = CheckResult(spec, path)
    if not path.is_dir():
        result.problems.append(f"no folder {path}")
        return result
    paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    result.found = len(paths)
    if len(paths) < spec.expected:
        result.problems.append(f"{spec.expected - len(paths):,} images fewer than the release "
                               "(a partial download or extraction)" if paths else "no images in the folder")
    elif len(paths) > spec.expected:
        result.notes.append(f"{len(paths) - spec.expected:,} images more than the release (other files mixed in?)")
    if paths and sample:
        sizes, unreadable = _sample_sizes(paths, sample)
        result.notes.append(_size_note(sizes, len(sizes) + len(unreadable)))
        if any(max(s) > 640 for s in sizes) and spec.name.startswith("coco"):
            result.notes.append("some images are larger than COCO's 640 pixels (not the official release?)")
        if unreadable:
            result.problems.append(f"{len(unreadable)} sampled images do not decode, e.g. {unreadable[0].name}")
    return result


def check_hpatches(spec: DatasetSpec, path: Path, sample: int) -> CheckResult:
    from .hpatches import HPatchesError, scan_sequence

    result = CheckResult(spec, path)
    if not path.is_dir():
        result.problems.append(f"no folder {path}")
        return result
    folders = sorted(p for p in path.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
    complete, broken, references = [], [], []
    for folder in folders:
        try:
            sequence, reason = scan_sequence(folder)
        except HPatchesError as error:
            sequence, reason = None, str(error)
        if sequence is None or len(sequence.homographies) != 5:
            broken.append(reason or f"{folder.name}: {len(sequence.homographies)} pairs instead of 5")
        else:
            complete.append(folder)
            references.append(sequence.images[1])
    result.found = len(complete)
    kinds = {k: sum(f.name.startswith(k) for f in complete) for k in ("i_", "v_")}
    result.notes.append(f"{kinds['i_']} of {HPATCHES_ILLUMINATION} illumination (i_*) and {kinds['v_']} of "
                        f"{HPATCHES_VIEWPOINT} viewpoint (v_*) sequences complete (images 1..6, H_1_2..H_1_6)")
    if not folders:
        result.problems.append("no i_* or v_* sequence folders")
    elif len(complete) < spec.expected:
        result.problems.append(f"{spec.expected - len(complete)} sequences missing or incomplete")
    for reason in broken[:5]:
        result.problems.append(reason)
    if len(broken) > 5:
        result.problems.append(f"... {len(broken) - 5} more incomplete sequences")
    if complete and sample:
        sizes, unreadable = _sample_sizes(references, sample)
        result.notes.append(_size_note(sizes, len(sizes) + len(unreadable)))
        if unreadable:
            result.problems.append(f"{len(unreadable)} sampled images do not decode, e.g. {unreadable[0]}")
    return result


def check_dataset(name: str, data_dir: str | os.PathLike | None = None, *, path: str | os.PathLike | None = None,
                  sample: int = 20) -> CheckResult:
    """Check one dataset of :data:`DATASETS` at ``path`` (default: its folder under the data folder),
    decoding ``sample`` images spread over it for their sizes."""
    spec = DATASETS[name]
    folder = Path(path) if path is not None else data_root(data_dir) / spec.folder
    check = check_hpatches if spec.kind == "hpatches" else check_images
    return check(spec, folder, sample)


SYNTHETIC_SHAPES_NOTE = ("synthetic_shapes: generated, nothing to download (magic-point_shapes*.yaml draw it on first "
                         "use and cache it under ~/.cache/superpoint_ros/synthetic_shapes/; "
                         "python -m superpoint_training.build_synthetic_shapes --help builds or checks the cache)")
