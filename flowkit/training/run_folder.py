"""A run's folder on disk: where it is, whether it resumes, its config files, ``log.csv`` (and
the history rebuilt from it), TensorBoard scalars and the final ``metrics.json`` / ``run.json``.

Layout written by rank 0 (nothing at all when ``out`` is ``None``)::

    config.toml, config.json    the resolved TrainConfig
    log.csv                     step, train_bpd (mean since the last row), test_bpd, lr, ...
    tensorboard/                the same scalars, when enabled
    checkpoints/                see flowkit.training.checkpoint
    metrics.json, run.json      written at the end (flowkit.training.report)
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from flowkit.errors import CheckpointError, ConfigError
from flowkit.files import atomic_path, atomic_write_text
from flowkit.training import checkpoint as ckpt
from flowkit.training.config import TrainConfig, save_config
from flowkit.training.lock import RunLock
from flowkit.training.step import StepOutcome

if TYPE_CHECKING:  # optional dependency, imported only when a run asks for it
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["LOG_FIELDS", "CsvLog", "RunFolder", "default_run_dir", "history_from_rows", "read_log"]


def default_run_dir(root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>``: a fresh folder name for a run started now."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / stamp


LOG_FIELDS = ("step", "train_bpd", "test_bpd", "lr", "grad_norm", "skipped_steps", "wall_time_s")


def read_log(path: Path, resume_step: int) -> list[dict[str, str]]:
    """The rows of ``log.csv`` up to ``resume_step``, each checked (a step number, numbers or
    nothing in the other columns); anything else is a :class:`CheckpointError` naming the file,
    the line and what is wrong, raised before the run folder is changed. Rows after the
    checkpoint are dropped unread: the resumed run writes them again."""
    if not path.exists():
        return []

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(
            f"--resume: {what}; nothing was changed (the checkpoint is intact): repair or "
            f"remove that line of {path.name} and resume again"
        )

    rows: list[dict[str, str]] = []
    reader: csv.DictReader[str] | None = None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []  # reads the first line (none in an empty file)
            if header and "step" not in header:
                raise refuse(f"{path} line 1: the header {','.join(header)} has no 'step' column")
            for row in reader:
                rows.append(_checked_row(row, path, reader.line_num, resume_step, refuse))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        where = f"{path} line {reader.line_num}" if reader and reader.line_num else str(path)
        raise refuse(f"{where} cannot be read ({err})") from err
    return [r for r in rows if r]


def _checked_row(
    row: dict[str | None, Any],
    path: Path,
    line: int,
    resume_step: int,
    refuse: Callable[[str], CheckpointError],
) -> dict[str, str]:
    """One row of ``log.csv`` as its known columns, checked; ``{}`` for a row after the
    checkpoint (dropped on resume)."""
    step_text = row.get("step")
    try:
        step = int(str(step_text).strip())
    except ValueError:
        raise refuse(f"{path} line {line}: step {step_text!r} is not a step number") from None
    if step > resume_step:
        return {}
    if None in row:  # DictReader's key for values beyond the header
        raise refuse(f"{path} line {line}: more values than the header has columns")
    checked = {}
    for key in LOG_FIELDS:
        value = row.get(key)
        if value is None and key in row:  # a short line: the header names a missing column
            raise refuse(f"{path} line {line}: fewer values than the header has columns")
        value = (value or "").strip()
        if value and key != "step":
            try:
                float(value)
            except ValueError:
                raise refuse(f"{path} line {line}: {key} {value!r} is not a number") from None
        checked[key] = value
    return checked


class CsvLog:
    """``log.csv``, appended row by row (flushed, so a killed run keeps its log)."""

    FIELDS = LOG_FIELDS

    def __init__(
        self, path: Path, resume_step: int | None, rows: list[dict[str, str]] | None = None
    ):
        """``rows``: the log's rows up to ``resume_step`` as :func:`read_log` returned them
        (read here when not given)."""
        self.path = path
        if rows is None:
            rows = read_log(path, resume_step) if resume_step is not None else []
        # Rewrite (atomically) so rows written after the checkpoint we resume from are dropped.
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.previous = rows
        self.fh: TextIO = open(path, "a", newline="")  # noqa: SIM115 - open for the whole run
        self.writer = csv.DictWriter(self.fh, fieldnames=self.FIELDS)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in self.FIELDS})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def history_from_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The :class:`~flowkit.training.report.TrainResult` history of the logged rows (a resumed
    run's history starts with the steps before the checkpoint, at the log's precision)."""

    def num(v: str | None) -> float | None:
        return float(v) if v not in ("", None) else None

    out = []
    for r in rows:
        item: dict[str, Any] = {"step": int(r["step"])}
        for key in ("train_bpd", "test_bpd", "lr", "wall_time_s"):
            if num(r.get(key, "")) is not None:
                item[key] = num(r[key])
        if "train_bpd" in item:
            item["loss"] = item["train_bpd"]
        out.append(item)
    return out


def _tensorboard(run_dir: Path, purge_step: int | None) -> SummaryWriter | None:
    # Imported here: TensorBoard is optional, and a missing or broken install must not stop
    # training (the CSV log still has everything).
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F811 - the runtime import
    except Exception as err:
        warnings.warn(f"TensorBoard logging disabled ({err})", stacklevel=2)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


class RunFolder:
    """The run folder of ``config.out`` (``None``: nothing is written); only rank 0 writes."""

    def __init__(self, out: str | None, main: bool) -> None:
        self.run_dir = Path(out) if out else None
        self.checkpoint_dir = self.run_dir / "checkpoints" if self.run_dir else None
        self.writes = main and self.run_dir is not None
        self.csv: CsvLog | None = None
        self.tb: SummaryWriter | None = None
        self._window: list[float] = []
        self._lock = RunLock(self.run_dir) if self.writes and self.run_dir else None
        self._log_rows: list[dict[str, str]] | None = None
        self._created: list[Path] = []  # folders this run made, deepest first
        self._started = False

    def lock(self) -> None:
        """Take the folder's lock (:mod:`flowkit.training.lock`) before reading or writing it;
        :meth:`close` releases it."""
        if self._lock is not None:
            assert self.run_dir is not None
            folder = self.run_dir
            # The lock creates the folder and any missing parents; remember which, so a run
            # refused before it starts can remove exactly those again.
            while not folder.exists() and folder != folder.parent:
                self._created.append(folder)
                folder = folder.parent
            self._lock.acquire()

    def check_log(self, resume_step: int | None) -> None:
        """Read and check ``log.csv`` of a resumed run now, before anything is written, so a
        damaged log stops the resume with the folder as it was (see :func:`read_log`)."""
        if self.writes and self.run_dir is not None and resume_step is not None:
            self._log_rows = read_log(self.run_dir / "log.csv", resume_step)

    def checkpoint_to_resume(
        self, resume: bool, say: Callable[[str], None]
    ) -> ckpt.Checkpoint | None:
        """The newest readable checkpoint when ``resume``; refuses to start a fresh run over a
        folder that already holds checkpoints."""
        if self.checkpoint_dir is None:
            return None
        if resume:
            # The warning about each unreadable checkpoint is held back until it is known
            # whether any loads: when none does, the one error line below says it all.
            with warnings.catch_warnings(record=True) as skipped:
                warnings.simplefilter("always")
                found = ckpt.latest_checkpoint(self.checkpoint_dir)
            existing = ckpt.list_checkpoints(self.checkpoint_dir)
            if found is None and existing:
                # Starting over would prune or overwrite them: a resume never destroys a run.
                names = ", ".join(p.name for p in existing)
                first = str(skipped[0].message) if skipped else ""
                why = f"; {first.removeprefix('skipping unreadable checkpoint ')}" if first else ""
                raise CheckpointError(
                    f"--resume: no checkpoint in {self.checkpoint_dir} could be read "
                    f"({names}{why}); nothing was changed; move them away to start a new run "
                    "there"
                )
            for record in skipped:  # an older checkpoint loaded: say what was passed over
                warnings.warn(record.message, stacklevel=2)
            if found is None:
                say(f"no checkpoint in {self.checkpoint_dir}; starting a new run there")
            return found
        if ckpt.list_checkpoints(self.checkpoint_dir):
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue it or "
                "choose another --out"
            )
        return None

    def start(self, config: TrainConfig, resume_step: int | None) -> list[dict[str, Any]]:
        """Write the config files and open the logs; returns the history logged before
        ``resume_step`` (empty for a new run or a process that writes nothing)."""
        if not self.writes:
            return []
        assert self.run_dir is not None
        self._started = True
        if resume_step is not None and self._log_rows is None:
            self.check_log(resume_step)  # read before the config files are rewritten
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / "config.toml")
        save_config(config, self.run_dir / "config.json")
        self.csv = CsvLog(self.run_dir / "log.csv", resume_step, self._log_rows)
        if config.tensorboard:
            self.tb = _tensorboard(self.run_dir, resume_step)
        return history_from_rows(self.csv.previous)

    def log(
        self,
        config: TrainConfig,
        step: int,
        outcome: StepOutcome,
        test_bpd: float | None,
        skipped: int,
        wall: float,
    ) -> None:
        """Log a row at logging and evaluation steps: ``train_bpd`` is the mean of the finite
        losses since the previous row."""
        if not self.writes:
            return
        if outcome.finite:
            self._window.append(outcome.loss)
        if test_bpd is None and not (config.log_every and step % config.log_every == 0):
            return
        avg = float(np.mean(self._window)) if self._window else math.nan
        self._window = []
        assert self.csv is not None
        self.csv.write(
            {
                "step": step,
                "train_bpd": f"{avg:.5f}",
                "test_bpd": None if test_bpd is None else f"{test_bpd:.5f}",
                "lr": f"{outcome.lr:.3g}",
                "grad_norm": f"{outcome.grad_norm:.4g}",
                "skipped_steps": skipped,
                "wall_time_s": f"{wall:.2f}",
            }
        )
        if self.tb is not None:
            self.tb.add_scalar("train/bpd", avg, step)
            self.tb.add_scalar("train/lr", outcome.lr, step)
            self.tb.add_scalar("train/grad_norm", outcome.grad_norm, step)
            if test_bpd is not None:
                self.tb.add_scalar("test/bpd", test_bpd, step)

    def write_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """``metrics.json`` (sorted keys) and the final test bits/dim on TensorBoard."""
        if not self.writes:
            return
        assert self.run_dir is not None
        text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.run_dir / "metrics.json", text)
        if self.tb is not None:
            self.tb.add_scalar("test/bpd", metrics["test_bpd"], step)

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()
        if self.tb is not None:
            self.tb.close()
        if self._lock is not None:
            self._lock.release()
            # A run refused before it started leaves no empty folder behind it (only the lock
            # was ever in it); a folder that existed before, or holds anything, stays.
            if not self._started:
                with contextlib.suppress(OSError):
                    for folder in self._created:
                        folder.rmdir()  # fails, harmlessly, when something is in it
