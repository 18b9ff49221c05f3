"""The transfers a benchmark asks for: every held-out face to every other expression its own
subject shows, so each edit has the same person's real face of the target expression to be
compared with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowkit.data.emotion_set import EmotionSet
from flowkit.errors import ConfigError

__all__ = ["TransferTasks", "transfer_tasks"]


@dataclass
class TransferTasks:
    """``T`` transfers over a held-out set (all arrays ``(T,)`` unless noted).

    Attributes:
        source: row of the face to edit in the held-out set.
        source_label, target_label: its expression and the wanted one.
        subject: the person (the unit of the bootstrap).
        targets: for each transfer, the held-out rows of the same subject showing the target
            expression (the real answers), a list of ``T`` arrays.
        reference: a face of the target expression of *another* person (reference transfer),
            row in the held-out set, or ``-1 - row`` of the training set when no other held-out
            person shows that expression.
    """

    source: np.ndarray
    source_label: np.ndarray
    target_label: np.ndarray
    subject: np.ndarray
    targets: list[np.ndarray]
    reference: np.ndarray

    def __len__(self) -> int:
        return len(self.source)

    def take(self, index: np.ndarray) -> TransferTasks:
        """The transfers at ``index``."""
        index = np.asarray(index, dtype=np.int64)
        return TransferTasks(
            source=self.source[index],
            source_label=self.source_label[index],
            target_label=self.target_label[index],
            subject=self.subject[index],
            targets=[self.targets[i] for i in index],
            reference=self.reference[index],
        )


def transfer_tasks(
    test_set: EmotionSet,
    train_set: EmotionSet | None = None,
    seed: int = 0,
    max_tasks: int | None = None,
) -> TransferTasks:
    """All transfers of ``test_set``: each face x each other expression of its subject.

    Args:
        test_set: held-out faces with subject ids (people the judged model never saw).
        train_set: where references come from when no other held-out person shows the target.
        seed: choice of the reference faces (and of the subset when ``max_tasks`` is set).
        max_tasks: keep a seeded random subset of at most this many transfers (whole faces
            stay together: a subset of the faces, each with all its targets).

    Raises:
        ConfigError: the set has no subject ids, or no subject shows two expressions.
    """
    if test_set.subjects is None:
        raise ConfigError(
            "the transfer benchmark needs subject ids (each edit is compared with the same "
            "person's real face of the target expression); this data has none"
        )
    rng = np.random.default_rng(seed)
    subjects = np.asarray(test_set.subjects).astype(str)
    labels = np.asarray(test_set.labels, dtype=np.int64)
    train_labels = None if train_set is None else np.asarray(train_set.labels, dtype=np.int64)
    rows: list[tuple[int, int, int, str, np.ndarray, int]] = []
    for i in range(len(test_set)):
        person = subjects[i]
        if not person:
            continue
        own = subjects == person
        for target in np.unique(labels[own]):
            if target == labels[i]:
                continue
            answers = np.flatnonzero(own & (labels == target))
            others = np.flatnonzero(~own & (subjects != "") & (labels == target))
            if len(others):
                reference = int(rng.choice(others))
            elif train_labels is not None and (train_labels == target).any():
                reference = -1 - int(rng.choice(np.flatnonzero(train_labels == target)))
            else:
                continue
            rows.append((i, int(labels[i]), int(target), person, answers, reference))
    if not rows:
        raise ConfigError(
            "the transfer benchmark found no held-out subject with two or more expressions"
        )
    tasks = TransferTasks(
        source=np.array([r[0] for r in rows], dtype=np.int64),
        source_label=np.array([r[1] for r in rows], dtype=np.int64),
        target_label=np.array([r[2] for r in rows], dtype=np.int64),
        subject=np.array([r[3] for r in rows]),
        targets=[r[4] for r in rows],
        reference=np.array([r[5] for r in rows], dtype=np.int64),
    )
    if max_tasks is not None and len(tasks) > max_tasks:
        tasks = _subset(tasks, int(max_tasks), rng)
    return tasks


def _subset(tasks: TransferTasks, max_tasks: int, rng: np.random.Generator) -> TransferTasks:
    """Whole faces in a seeded order, each taken while it still fits under ``max_tasks``; when
    not even one face fits, the first ``max_tasks`` transfers of the first face."""
    if max_tasks < 1:
        raise ConfigError(f"max_tasks must be >= 1, got {max_tasks}")
    counts = np.bincount(tasks.source)
    keep: list[int] = []
    total = 0
    for face in rng.permutation(np.unique(tasks.source)):
        if total + counts[face] <= max_tasks:
            keep.append(int(face))
            total += int(counts[face])
    if not keep:
        first = np.flatnonzero(tasks.source == tasks.source[0])[:max_tasks]
        return tasks.take(first)
    return tasks.take(np.flatnonzero(np.isin(tasks.source, keep)))
    return tasks
