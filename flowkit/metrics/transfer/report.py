"""The transfer benchmark's report: a table per method, paired differences against each
baseline with subject-level bootstrap intervals, a grid, and JSON / Markdown files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from flowkit.data import EMOTIONS, postprocess
from flowkit.files import atomic_write_text
from flowkit.metrics.bootstrap import Interval, group_bootstrap
from flowkit.metrics.grids import image_grid, save_image
from flowkit.metrics.transfer.methods import TransferMethod
from flowkit.metrics.transfer.scores import SCORES
from flowkit.metrics.transfer.tasks import TransferTasks

__all__ = ["TransferReport"]


GRID_ROWS = 8


def _baseline_names(methods: Sequence[TransferMethod]) -> list[str]:
    return [m.name for m in methods if m.kind == "baseline" and m.name != "unedited source"]


def _grid_rows(tasks: TransferTasks, rows: int) -> np.ndarray:
    """Up to ``rows`` transfers, each of another subject, cycling through the target
    expressions and preferring source expressions shown least so far, so the grid shows as
    many kinds of edit as it can."""
    chosen: list[int] = []
    used: set[str] = set()
    shown_sources: dict[int, int] = {}
    for target in np.tile(np.unique(tasks.target_label), rows):
        candidates = [
            int(i)
            for i in np.flatnonzero(tasks.target_label == target)
            if str(tasks.subject[i]) not in used
        ]
        if candidates:
            best = min(candidates, key=lambda i: shown_sources.get(int(tasks.source_label[i]), 0))
            chosen.append(best)
            used.add(str(tasks.subject[best]))
            source = int(tasks.source_label[best])
            shown_sources[source] = shown_sources.get(source, 0) + 1
        if len(chosen) == rows:
            break
    return np.asarray(chosen, dtype=np.int64)


@dataclass
class TransferReport:
    """Scores of every method on every transfer, and what a reader needs from them.

    Attributes:
        summary: ``{method: {score: Interval}}`` means with subject-bootstrap intervals.
        comparisons: ``{method: {baseline: {score: Interval}}}`` paired differences
            (method minus baseline, per transfer) with subject-bootstrap intervals.
        real_targets: the judges on the real target faces (recognition and artifacts).
        info: counts, seed, method kinds.
    """

    summary: dict[str, dict[str, Interval]]
    comparisons: dict[str, dict[str, dict[str, Interval]]]
    real_targets: dict[str, Interval]
    info: dict[str, Any]
    grid_images: np.ndarray | None = field(default=None, repr=False)
    grid_columns: list[str] = field(default_factory=list, repr=False)
    grid_rows: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def build(
        cls,
        methods: Sequence[TransferMethod],
        scores: dict[str, dict[str, np.ndarray]],
        real: dict[str, np.ndarray],
        tasks: TransferTasks,
        edited: dict[str, Tensor],
        faces: Tensor,
        references: Tensor,
        n_bits: int,
        seed: int = 0,
    ) -> TransferReport:
        """Aggregate per-transfer ``scores`` (see :func:`score_methods`)."""

        def interval(values: np.ndarray) -> Interval:
            return group_bootstrap(values, tasks.subject, seed=seed)

        summary = {
            name: {score: interval(values[score]) for score in SCORES}
            for name, values in scores.items()
        }
        baselines = _baseline_names(methods)
        comparisons = {
            m.name: {
                base: {
                    score: interval(scores[m.name][score] - scores[base][score]) for score in SCORES
                }
                for base in baselines
            }
            for m in methods
            if m.kind != "baseline"
        }
        report = cls(
            summary=summary,
            comparisons=comparisons,
            real_targets={k: interval(v) for k, v in real.items()},
            info={
                "transfers": len(tasks),
                "subjects": len(np.unique(tasks.subject)),
                "faces": len(np.unique(tasks.source)),
                "n_bits": n_bits,
                "seed": seed,
                "kinds": {m.name: m.kind for m in methods},
                "baselines": baselines,
            },
        )
        report._make_grid(methods, tasks, edited, faces, references, n_bits)
        return report

    # ----- the picture ----------------------------------------------------------------------

    def _make_grid(
        self,
        methods: Sequence[TransferMethod],
        tasks: TransferTasks,
        edited: dict[str, Tensor],
        faces: Tensor,
        references: Tensor,
        n_bits: int,
    ) -> None:
        rows = _grid_rows(tasks, GRID_ROWS)
        columns = [faces[tasks.source[rows]]]
        names = ["source"]
        for m in methods:
            if m.name != "unedited source":
                columns.append(edited[m.name][rows])
                names.append(m.column)
        columns.append(faces[np.array([tasks.targets[i][0] for i in rows])])
        names.append("real target")
        if any(m.kind == "reference" for m in methods):
            columns.append(references[rows])
            names.append("reference")
        tiles = np.stack([postprocess(c.float(), n_bits, full_range=True).numpy() for c in columns])
        self.grid_images = tiles.transpose(1, 0, 2, 3, 4).reshape(-1, *tiles.shape[2:])
        self.grid_columns = names
        self.grid_rows = [
            f"{EMOTIONS[tasks.source_label[i]]}>{EMOTIONS[tasks.target_label[i]]}" for i in rows
        ]

    def grid(self, scale: int = 3):
        """PIL image: one transfer per row; source, every method, the real target, reference."""
        if self.grid_images is None:
            raise ValueError("this report has no grid (it was loaded from JSON)")
        return image_grid(
            self.grid_images,
            nrow=len(self.grid_rows),
            row_labels=self.grid_rows,
            col_labels=self.grid_columns,
            scale=scale,
        )

    # ----- files ------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "summary": {
                m: {s: v.as_dict() for s, v in scores.items()} for m, scores in self.summary.items()
            },
            "real_targets": {s: v.as_dict() for s, v in self.real_targets.items()},
            "comparisons": {
                m: {b: {s: v.as_dict() for s, v in d.items()} for b, d in per.items()}
                for m, per in self.comparisons.items()
            },
        }

    def markdown(self) -> str:
        """The tables: scores per method (mean [95 % interval]) and paired differences."""
        info = self.info
        lines = [
            "# Expression transfer benchmark",
            "",
            f"{info['transfers']} transfers of {info['faces']} held-out faces of "
            f"{info['subjects']} subjects (each face to every other expression its subject "
            "shows), scored against the same subject's real faces of the target expression. "
            "Intervals: 95 % subject-level bootstrap.",
            "",
            "| method | kind | SSIM to real target | target recognised | identity kept | "
            "artifacts |",
            "|---|---|---|---|---|---|",
        ]

        def cell(v: Interval, percent: bool) -> str:
            if percent:
                return f"{100 * v.mean:.1f} % [{100 * v.low:.1f}, {100 * v.high:.1f}]"
            return f"{v.mean:.3f} [{v.low:.3f}, {v.high:.3f}]"

        for name, scores in self.summary.items():
            lines.append(
                f"| {name} | {info['kinds'][name]} | {cell(scores['ssim'], False)} | "
                f"{cell(scores['recognised'], True)} | {cell(scores['identity'], True)} | "
                f"{cell(scores['artifacts'], True)} |"
            )
        real = self.real_targets
        lines.append(
            f"| real target faces | judge | — | {cell(real['recognised'], True)} | — | "
            f"{cell(real['artifacts'], True)} |"
        )
        lines += [
            "",
            "## Paired differences, method minus baseline",
            "",
            "| method | baseline | Δ SSIM | Δ recognised | Δ identity | Δ artifacts |",
            "|---|---|---|---|---|---|",
        ]
        for name, per in self.comparisons.items():
            for base, diffs in per.items():
                lines.append(
                    f"| {name} | {base} | "
                    + " | ".join(
                        f"{diffs[s]}{' *' if diffs[s].excludes_zero else ''}" for s in SCORES
                    )
                    + " |"
                )
        lines += ["", "`*`: the interval excludes 0.", ""]
        return "\n".join(lines)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and ``grid.png`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"json": folder / "report.json", "markdown": folder / "report.md"}
        atomic_write_text(paths["json"], json.dumps(self.as_dict(), indent=2) + "\n")
        atomic_write_text(paths["markdown"], self.markdown())
        if self.grid_images is not None:
            paths["grid"] = save_image(self.grid(), folder / "grid.png")
        return paths
