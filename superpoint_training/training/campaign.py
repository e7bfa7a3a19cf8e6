"""The weights campaign's stages and their bookkeeping (the command: :mod:`superpoint_training.campaign`)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..common.config import load_config, read_yaml
from ..common.experiments import experiments_root

log = logging.getLogger(__name__)

STAGES = ("shapes", "photo_crops", "adaptation", "magicpoint_photos", "superpoint", "report", "card")

DEFAULTS: dict[str, Any] = {
    "name": "campaign",
    "photos": "../shared/data/photos",
    "device": "auto",
    "precision": "auto",  # of the training and label stages: auto, bf16, fp32
    "shapes": {"train_config": "config/magic-point_shapes_cpu.yaml", "weights": "", "max_minutes": 60.0,
               "overrides": []},
    "photo_crops": {"size": [480, 640], "crops_per_photo": 2, "validation_fraction": 0.15, "seed": 0},
    "adaptation": {"export_config": "config/photos_export.yaml", "weights": "", "homographies": 12,
                   "overrides": []},
    "magicpoint_photos": {"enable": True, "train_config": "config/magic-point_photos.yaml", "max_minutes": 30.0,
                          "overrides": []},
    "superpoint": {"train_config": "config/superpoint_photos_cpu.yaml", "pretrained": "", "max_minutes": 80.0,
                   "overrides": []},
    "report": {"hpatches": "../shared/data/oxford_hpatches", "tum": "../shared/data/tum_fr2_desk",
               "baseline_weights": "superpoint_ros", "methods": "superpoint,sift,orb", "max_sequences": 0,
               "ransac_orders": 1},
}


def load_campaign_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """The campaign YAML merged strictly over :data:`DEFAULTS` (an unknown key is an error naming it)."""
    return load_config(path, DEFAULTS, overrides)


def resolve_precision(precision: str, device: str) -> str:
    """The stages' precision: the trainer's rule (:func:`~.trainer.resolve_training_precision`)."""
    import torch

    from .trainer import resolve_training_precision

    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return resolve_training_precision(precision, torch.device("cuda" if on_cuda else "cpu"))


class Campaign:
    """Runs the stages in order; see the module docstring."""

    def __init__(self, config: dict, exper_dir: str | os.PathLike | None = None, command: str = ""):
        self.config = config
        self.root = Path(exper_dir) if exper_dir else experiments_root()
        self.dir = self.root / config["name"]
        self.state_path = self.dir / "campaign_state.yaml"
        self.state: dict = read_yaml(self.state_path) if self.state_path.is_file() else {}
        self.precision = resolve_precision(config["precision"], config["device"])
        self.command = command

    # ---- bookkeeping ------------------------------------------------------------------------
    def _save_state(self) -> None:
        from ..common.files import atomic_write_text

        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_path, yaml.safe_dump(self.state, sort_keys=False))

    def done(self, stage: str) -> bool:
        return self.state.get(stage, {}).get("status") == "done"

    def redo(self, stage: str) -> None:
        """Mark ``stage`` and every later stage as not done (their outputs are kept and resumed)."""
        for name in STAGES[STAGES.index(stage):]:
            self.state.pop(name, None)
        self._save_state()

    def run(self, until: str | None = None) -> dict:
        for stage in STAGES:
            if self.done(stage):
                print(f"[campaign] {stage}: done before ({self.state[stage].get('summary', '')})", flush=True)
            else:
                print(f"[campaign] {stage}: running", flush=True)
                start = time.perf_counter()
                record = getattr(self, f"stage_{stage}")() or {}
                record.update(status="done", seconds=round(time.perf_counter() - start, 1),
                              finished=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
                self.state[stage] = record
                self._save_state()
                print(f"[campaign] {stage}: {record.get('summary', 'done')} ({record['seconds']:.0f} s)", flush=True)
            if stage == until:
                break
        return self.state

    # ---- helpers ----------------------------------------------------------------------------
    def _train(self, stage: str, train_config: str, overrides: list[str], pretrained: str | None,
               max_minutes: float) -> dict:
        from .trainer import train

        experiment = f"{self.config['name']}_{stage}"
        sets = [f"train.precision={self.precision}", f"train.max_minutes={max_minutes}", *overrides]
        if self.config["device"] != "auto":
            sets.append(f"train.device={self.config['device']}")
        trainer = train(train_config, experiment, overrides=sets, pretrained=pretrained or None,
                        exper_dir=self.root / experiment, show_progress=sys.stderr.isatty())
        if trainer.stopped_by is not None:  # Ctrl+C / kill: saved, not finished
            raise KeyboardInterrupt
        metrics = trainer.metrics_history[-1] if trainer.metrics_history else {}
        return {
            "weights": str(trainer.weights_path),
            "iterations": trainer.final_iteration,
            "budget_reached": trainer.budget_reached,
            "final_loss": trainer.final_loss,
            "validation": {k: float(v) for k, v in metrics.items()},
            "summary": f"iteration {trainer.final_iteration}, weights {trainer.weights_path}",
        }

    def _crops(self) -> dict:
        return self.state["photo_crops"]

    def _export(self, weights: str, name: str) -> dict:
        from .pseudo_labels import build_config, export

        adaptation = self.config["adaptation"]
        crops = self._crops()
        sets = [f"model.precision={self.precision}",
                f"model.homography_adaptation.num={adaptation['homographies']}", *adaptation["overrides"]]
        if self.config["device"] != "auto":
            sets.append(f"device={self.config['device']}")
        written = {}
        for split in ("training", "validation"):
            config = build_config(adaptation["export_config"], [*sets, f"data.images={crops[split]}"])
            summary = export(config, "none", f"{name}_{split}", weights=weights,
                             output_root=self.root / "outputs" / f"{name}_{split}", show_progress=sys.stderr.isatty())
            written[split] = f"{name}_{split}"
            log.info("labels %s: %s", split, summary.get("written"))
        return written

    def _label_overrides(self, labels: Mapping[str, str]) -> list[str]:
        crops = self._crops()
        return [f"data.images={crops['training']}", f"data.validation_images={crops['validation']}",
                f"data.labels={labels['training']}", f"data.validation_labels={labels['validation']}",
                f"data.validation_patches={self.config['name']}_patches"]

    # ---- the stages -------------------------------------------------------------------------
    def stage_shapes(self) -> dict:
        cfg = self.config["shapes"]
        if cfg["weights"]:
            return {"weights": cfg["weights"], "summary": f"weights {cfg['weights']} stand in for this stage"}
        return self._train("shapes", cfg["train_config"], cfg["overrides"], None, cfg["max_minutes"])

    def stage_photo_crops(self) -> dict:
        from ..data.photo_crops import write_photo_crops

        cfg = self.config["photo_crops"]
        output = self.dir / "photo_crops"
        counts = write_photo_crops(self.config["photos"], output, tuple(cfg["size"]), cfg["crops_per_photo"],
                                   cfg["validation_fraction"], cfg["seed"])
        if not counts["validation"]:
            raise ValueError(f"{self.config['photos']}: no photo group went to validation; "
                             "raise photo_crops.validation_fraction or add photos")
        return {"training": str(output / "training"), "validation": str(output / "validation"), "counts": counts,
                "summary": f"{counts['training']} training and {counts['validation']} validation images "
                           f"({counts['excluded']} photos of evaluation scenes left out)"}

    def stage_adaptation(self) -> dict:
        weights = self.config["adaptation"]["weights"] or self.state["shapes"]["weights"]
        labels = self._export(weights, f"{self.config['name']}_ha1")
        return {"weights": weights, "labels": labels, "summary": f"labels from {weights}: {labels}"}

    def stage_magicpoint_photos(self) -> dict:
        cfg = self.config["magicpoint_photos"]
        first = self.state["adaptation"]
        if not cfg["enable"]:
            return {"labels": first["labels"], "kept": False, "summary": "disabled: the first labels are used"}
        trained = self._train("magicpoint_photos", cfg["train_config"],
                              [*self._label_overrides(first["labels"]), *cfg["overrides"]], first["weights"],
                              cfg["max_minutes"])
        before = heldout_repeatability(first["weights"], self._patches())
        after = heldout_repeatability(trained["weights"], self._patches())
        kept = after > before
        labels = self._export(trained["weights"], f"{self.config['name']}_ha2") if kept else first["labels"]
        return {**trained, "labels": labels, "kept": kept, "repeatability_before": before,
                "repeatability_after": after,
                "summary": f"held-out repeatability {before:.3f} -> {after:.3f}: "
                           + ("kept, labels again" if kept else "not kept, the first labels stay")}

    def _patches(self) -> list:
        from ..data.validation_patches import generate_patches, load_patches

        folder = self.root / "outputs" / f"{self.config['name']}_patches"
        if not folder.is_dir():
            from ..data.image_folder import list_images

            generate_patches(list_images(Path(self._crops()["validation"])), folder, (240, 320))
        return load_patches(folder)

    def stage_superpoint(self) -> dict:
        cfg = self.config["superpoint"]
        labels = self.state["magicpoint_photos"]["labels"]
        second_round = self.state["magicpoint_photos"]
        pretrained = cfg["pretrained"] or (
            second_round["weights"] if second_round.get("kept") else self.state["adaptation"]["weights"])
        record = self._train("superpoint", cfg["train_config"], [*self._label_overrides(labels), *cfg["overrides"]],
                             pretrained, cfg["max_minutes"])
        record["pretrained"] = pretrained
        return record

    def stage_report(self) -> dict:
        cfg = self.config["report"]
        weights = self.state["superpoint"]["weights"]
        out: dict[str, Any] = {}
        hpatches = Path(cfg["hpatches"])
        if hpatches.is_dir():
            from ..evaluation.hpatches_run import run as evaluate_hpatches

            evaluate_hpatches(
                hpatches, self.dir / "report_hpatches", methods=cfg["methods"].split(","),
                weights=[weights] + ([cfg["baseline_weights"]] if cfg["baseline_weights"] else []),
                max_sequences=cfg["max_sequences"] or None, ransac_orders=max(1, cfg["ransac_orders"]),
                device=self.config["device"], plots=False, command=f"campaign {self.config['name']}: report",
            )  # fmt: skip
            out["hpatches"] = str(self.dir / "report_hpatches" / "report.json")
        else:
            out["hpatches_skipped"] = f"{hpatches}: not found"
        tum = Path(cfg["tum"])
        if (tum / "rgb").is_dir():
            from ..odometry.evaluation import run as evaluate_vo

            for label, source in (("final", weights), ("baseline", cfg["baseline_weights"])):
                if not source:
                    continue
                result = evaluate_vo(tum / "rgb", tum / "camera.txt", self.dir / f"report_vo_{label}", weights=source,
                                     device=self.config["device"], groundtruth=tum / "groundtruth.txt", progress=False)
                out[f"vo_{label}"] = str(result.output / "summary.json")
        else:
            out["vo_skipped"] = f"{tum}: no rgb/ folder"
        out["summary"] = ", ".join(f"{k}: {v}" for k, v in out.items())
        return out

    def stage_card(self) -> dict:
        path = self.dir / "WEIGHTS_CARD.md"
        from ..common.files import atomic_write_text

        atomic_write_text(path, weights_card(self.config, self.state, self.precision, self.command))
        return {"card": str(path), "summary": f"card in {path}"}


@np.errstate(invalid="ignore")
def heldout_repeatability(weights: str, pairs: list) -> float:
    """Mean repeatability (top 300, 3 px) of a detector on the held-out warped pairs."""
    import torch

    from ..evaluation.metrics import repeatability
    from ..model.extractor import Extractor

    extractor = Extractor(weights, device="cuda" if torch.cuda.is_available() else "cpu", warmup=False,
                          max_keypoints=1000)
    values = []
    for _, image1, image2, H in pairs:
        f1, f2 = extractor(image1).numpy(), extractor(image2).numpy()
        result = repeatability(f1.keypoints, f1.scores, f2.keypoints, f2.scores, H, image1.shape, image2.shape,
                               300, 3.0)
        values.append(result["repeatability"])
    return float(np.nanmean(values)) if values else float("nan")


def weights_card(config: dict, state: dict, precision: str, command: str) -> str:
    """The card: what was run, on what, for how long, and how the result compares."""
    from ..common.machine import describe_machine
    from ..evaluation.report import per_sequence_table

    sp = state.get("superpoint", {})
    lines = [f"# Weights card: campaign `{config['name']}`", "",
             f"- Command: `{command or 'python -m superpoint_training.campaign'}`",
             f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- Machine: {platform.node() or 'unknown'}; {describe_machine(config['device'])}; training precision {precision}",
             f"- Photos: `{config['photos']}`: {state.get('photo_crops', {}).get('summary', '-')}",
             "", "## Stages", "", "| stage | wall time | result |", "|---|---|---|"]
    for stage in STAGES[:-1]:
        record = state.get(stage, {})
        extra = ""
        if record.get("iterations") is not None:
            extra = f" ({record['iterations']} iterations" + (", budget reached" if record.get("budget_reached") else "") + ")"
        lines.append(f"| {stage} | {record.get('seconds', 0) / 60:.1f} min | {record.get('summary', '-')}{extra} |")
    if sp.get("weights") and Path(sp["weights"]).is_file():
        from ..model.loading import load_superpoint

        defaults = load_superpoint(sp["weights"]).detection_defaults
        lines += ["", "Detection defaults stored in the weights (Extractor, node and evaluation use them unless told "
                  "otherwise): " + ", ".join(f"{k} {v}" for k, v in defaults.items())]
    if sp.get("validation"):
        lines += ["", "Held-out validation (warped pairs of the validation photos) at the end of SuperPoint training:", ""]
        lines += [f"- {k}: {v:.4g}" for k, v in sp["validation"].items() if k.startswith("patches/")]
    report_path = state.get("report", {}).get("hpatches")
    if report_path and Path(report_path).is_file():
        report = json.loads(Path(report_path).read_text())
        desc = report["aggregates"].get("descriptor", {})
        det = report["aggregates"].get("detector", {})
        lines += ["", f"## Evaluation on `{report['settings']['dataset']}` (one run, {report['date']})", "",
                  "| method | correct e=1 / 3 / 5 | e=3 illumination / viewpoint | matching score | repeatability |",
                  "|---|---|---|---|---|"]
        for method, values in desc.items():
            def cell(metric: str, kind: str = "all", values=values) -> str:
                value = values.get(metric, {}).get(kind)
                return "-" if value is None else f"{value:.3f}"

            rep = det.get(method, {}).get("repeatability", {}).get("all")
            lines.append(f"| {method} | {cell('correct_e1')} / {cell('correct_e3')} / {cell('correct_e5')} | "
                         f"{cell('correct_e3', 'illumination')} / {cell('correct_e3', 'viewpoint')} | "
                         f"{cell('matching_score')} | {'-' if rep is None else f'{rep:.3f}'} |")
        lines += ["", "Homography correctness at e=3 per sequence:", ""] + per_sequence_table(report)
        lines += ["", f"Full report: `{Path(report_path).with_name('report.md')}`."]
    for label in ("final", "baseline"):
        vo = state.get("report", {}).get(f"vo_{label}")
        if vo and Path(vo).is_file():
            lines += ["", f"## Visual odometry ({label} weights)", "",
                      Path(vo).with_name("summary.md").read_text() if Path(vo).with_name("summary.md").is_file()
                      else Path(vo).read_text()]
    return "\n".join(lines) + "\n"


