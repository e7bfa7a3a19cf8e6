"""Bar charts, precision-recall curves (matplotlib, optional) and match pictures of an evaluation."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data.hpatches import HPatches, Pair
from .report import KIND_COLUMNS, METRIC_TITLES, PROTOCOL_METRICS, format_value


def plot_bars(report: dict, folder: Path) -> list[Path]:
    """One grouped bar chart per metric: methods on the x axis, illumination / viewpoint / all bars."""
    from ..common.viz import import_pyplot

    plt = import_pyplot()
    paths = []
    colours = {"illumination": "#e0a030", "viewpoint": "#3070c0", "all": "#808080"}
    for protocol, per_method in report["aggregates"].items():
        for metric in PROTOCOL_METRICS[protocol]:
            methods = list(per_method)
            fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(methods), 3.6), dpi=110)
            width = 0.26
            for i, kind in enumerate(KIND_COLUMNS):
                values = [per_method[m][metric][kind] for m in methods]
                x = np.arange(len(methods)) + (i - 1) * width
                bars = ax.bar(x, [0 if v is None else v for v in values], width, label=kind, color=colours[kind])
                for bar, value in zip(bars, values, strict=True):
                    ax.annotate(format_value(value, 2), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")  # fmt: skip
            ax.set_xticks(np.arange(len(methods)), methods, rotation=20 if len(methods) > 4 else 0)
            title = METRIC_TITLES[metric]
            ax.set_title(f"{title[0].upper()}{title[1:]} ({protocol} protocol)", fontsize=10)
            if metric != "localization_error":
                ax.set_ylim(0, 1.08)
            else:
                ax.set_ylim(0, max([v or 0 for m in methods for v in per_method[m][metric].values()] + [1]) * 1.15)
            ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            path = folder / f"{protocol}_{metric}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
    return paths


def plot_precision_recall(curves: dict, folder: Path) -> Path | None:
    """Precision-recall of the pooled nearest-neighbour matches, one panel per kind."""
    if not curves:
        return None
    from ..common.viz import import_pyplot

    plt = import_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=110, sharey=True)
    for ax, kind in zip(axes, KIND_COLUMNS, strict=True):
        for method, per_kind in curves.items():
            curve = per_kind[kind]
            if curve["recall"]:
                ax.plot(curve["recall"], curve["precision"], label=method, lw=1.5)
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("recall (correct matches found / all correct matches)", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Nearest-neighbour matches ranked by descriptor distance (descriptor protocol)", fontsize=10)
    fig.tight_layout()
    path = folder / "precision_recall.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_matches(dataset: HPatches, pairs: list[Pair], matches: dict, folder: Path) -> list[Path]:
    """For each chosen pair, one picture with a row per method: green correct, red wrong matches."""
    import cv2

    from ..common.viz import draw_matches

    paths = []
    for pair in pairs:
        image0, image1 = dataset.load(pair.sequence, 1).image, dataset.load(pair.sequence, pair.index).image
        rows = []
        for method, per_pair in matches.items():
            m = per_pair.get((pair.sequence, pair.index))
            if m is None:
                continue
            title = f"{method} {pair.sequence} {pair.name}: {int(m['correct'].sum())}/{len(m['matches'])} correct"
            legend = ("correct: within 3 px of the true reprojection", "wrong")
            rows.append(draw_matches(image0, image1, m["keypoints0"], m["keypoints1"], m["matches"], m["correct"],
                                     title, legend=legend))
        if rows:
            width = max(r.shape[1] for r in rows)
            rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
            path = folder / f"matches_{pair.sequence}_{pair.name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
            paths.append(path)
    return paths


def pick_match_pairs(dataset: HPatches, count: int) -> list[Pair]:
    """The hardest pair (1-last) of the first sequences, alternating illumination and viewpoint."""
    by_kind = defaultdict(list)
    for sequence in dataset.sequences.values():
        by_kind[sequence.kind].append(Pair(sequence.name, sequence.kind, sequence.targets[-1]))
    chosen = []
    for i in range(count):
        for kind in ("viewpoint", "illumination"):
            if len(chosen) < count and i < len(by_kind[kind]):
                chosen.append(by_kind[kind][i])
    return chosen


def make_plots(report: dict, curves: dict, datasets: dict, all_matches: dict, match_pictures: int,
               folder: Path) -> list[Path]:
    """The bar charts and precision-recall curves (matplotlib) and the match pictures (OpenCV).
    Without matplotlib the charts are skipped with one line; the match pictures are still drawn."""
    from ..common.viz import import_pyplot

    folder.mkdir(parents=True, exist_ok=True)
    plots = []
    if import_pyplot("the evaluation's bar charts and precision-recall curves") is not None:
        plots += plot_bars(report, folder)
        pr = plot_precision_recall(curves, folder)
        plots += [pr] if pr else []
    if "descriptor" in datasets and match_pictures > 0:
        pairs = pick_match_pairs(datasets["descriptor"], match_pictures)
        plots += plot_matches(datasets["descriptor"], pairs, all_matches, folder)
    if not plots and not any(folder.iterdir()):
        folder.rmdir()  # nothing drawn: no empty folder left behind
    return plots
